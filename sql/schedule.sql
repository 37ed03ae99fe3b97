-- Loop mode: pg_cron jobs for metricagg, created in the analytics database
-- (pg_cron's cron.database_name). Applied by scripts/db.sh; idempotent.
-- The jobs run as metricagg_job, never as a superuser; pg_cron's background
-- workers run them (cron.use_background_workers), so no password is needed.

-- Converts an interval to a cron expression. pg_cron 1.4 (Debian 12) has a
-- one-minute resolution; other values must divide an hour or a day evenly.
CREATE OR REPLACE FUNCTION metricagg.cron_expression(every interval) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog AS $$
DECLARE
    secs bigint := extract(epoch FROM every)::bigint;
BEGIN
    IF every IS NULL OR secs <= 0 THEN
        RAISE EXCEPTION 'metricagg_schedule: interval must be positive, got %', every
            USING HINT = 'e.g. metricagg_schedule(''1 minute'') or metricagg_schedule(''5 minutes'')';
    ELSIF secs % 60 <> 0 OR secs < 60 THEN
        RAISE EXCEPTION 'metricagg_schedule: pg_cron schedules in whole minutes, got %', every
            USING HINT = 'Use 1 minute or more, in whole minutes.';
    ELSIF secs = 60 THEN
        RETURN '* * * * *';
    ELSIF secs < 3600 AND 3600 % secs = 0 THEN
        RETURN format('*/%s * * * *', secs / 60);
    ELSIF secs < 86400 AND secs % 3600 = 0 AND 86400 % secs = 0 THEN
        RETURN format('0 */%s * * *', secs / 3600);
    ELSIF secs = 86400 THEN
        RETURN '0 0 * * *';
    END IF;
    RAISE EXCEPTION 'metricagg_schedule: % does not divide an hour or a day evenly', every
        USING HINT = 'Use e.g. 1, 2, 5, 10, 15 or 30 minutes, or 1, 2, 3, 4, 6, 8 or 12 hours.';
END
$$;

-- Schedules metricagg_run_once() as a named pg_cron job running as
-- metricagg_job in the given analytics database. Returns the job id.
CREATE OR REPLACE FUNCTION metricagg.metricagg_schedule_run(
    job_name text, every interval, analytics_database text DEFAULT current_database())
RETURNS bigint
LANGUAGE sql SET search_path = pg_catalog, public AS $$
    SELECT cron.schedule_in_database(job_name, metricagg.cron_expression(every),
                                     'SELECT metricagg_run_once()', analytics_database, 'metricagg_job')
$$;

-- Schedules the job (and its housekeeping) in loop mode. Returns the job id.
CREATE OR REPLACE FUNCTION metricagg.metricagg_schedule(
    every interval DEFAULT '1 minute',
    raw_database text DEFAULT 'metrics_raw',
    raw_retention interval DEFAULT '7 days')
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    job bigint;
BEGIN
    IF raw_retention IS NULL OR raw_retention < interval '1 day' THEN
        RAISE EXCEPTION 'metricagg_schedule: raw_retention must be at least 1 day'
            USING HINT = 'e.g. metricagg_schedule(''1 minute'', ''metrics_raw'', ''7 days'')';
    END IF;
    job := metricagg.metricagg_schedule_run('metricagg-run-once', every);
    -- Housekeeping: bins retention and pg_cron's own history, daily.
    PERFORM cron.schedule_in_database('metricagg-bins-retention', '23 3 * * *',
                                      'SELECT metricagg.drop_old_bin_partitions()', current_database(), 'metricagg_job');
    PERFORM cron.schedule_in_database('metricagg-prune-cron-history', '41 3 * * *',
                                      'SELECT metricagg.prune_cron_history()', current_database(), 'postgres');
    -- On the raw database (same cluster in the embedded setup): partitions
    -- ahead of time, and retention that never drops unprocessed changes.
    IF raw_database IS NOT NULL THEN
        PERFORM cron.schedule_in_database('metricagg-raw-partitions', '7 * * * *',
            'SELECT metricagg.ensure_partitions(now() - interval ''1 day'', now() + interval ''3 days'')',
            raw_database, 'metricagg_job');
        PERFORM cron.schedule_in_database('metricagg-raw-retention', '13 3 * * *',
            format('SELECT metricagg.drop_old_partitions(%L)', raw_retention), raw_database, 'metricagg_job');
    END IF;
    RETURN job;
END
$$;
COMMENT ON FUNCTION metricagg.metricagg_schedule(interval, text, interval) IS
'Loop mode: runs metricagg_run_once() every interval (pg_cron, whole minutes) as metricagg_job, plus daily retention and cron history pruning. Rescheduling replaces the jobs.';

CREATE OR REPLACE FUNCTION metricagg.metricagg_unschedule() RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, public AS $$
    SELECT count(cron.unschedule(jobid))::integer FROM cron.job WHERE jobname LIKE 'metricagg-%'
$$;
COMMENT ON FUNCTION metricagg.metricagg_unschedule() IS 'Stops loop mode: removes every metricagg pg_cron job. Returns how many.';

-- cron.job_run_details grows forever unless pruned.
CREATE OR REPLACE FUNCTION metricagg.prune_cron_history(keep interval DEFAULT '7 days') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM cron.job_run_details WHERE end_time < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION metricagg.prune_cron_history(interval) IS 'Deletes cron.job_run_details rows older than keep.';

CREATE OR REPLACE FUNCTION public.metricagg_schedule(every interval DEFAULT '1 minute') RETURNS bigint
LANGUAGE sql AS 'SELECT metricagg.metricagg_schedule(every)';
COMMENT ON FUNCTION public.metricagg_schedule(interval) IS 'Loop mode: run metricagg_run_once() every interval through pg_cron (administrator only).';
CREATE OR REPLACE FUNCTION public.metricagg_unschedule() RETURNS integer
LANGUAGE sql AS 'SELECT metricagg.metricagg_unschedule()';
COMMENT ON FUNCTION public.metricagg_unschedule() IS 'Stops loop mode (administrator only).';
REVOKE ALL ON FUNCTION public.metricagg_schedule(interval), public.metricagg_unschedule(),
                       metricagg.metricagg_schedule_run(text, interval, text),
                       metricagg.metricagg_schedule(interval, text, interval), metricagg.metricagg_unschedule(),
                       metricagg.prune_cron_history(interval) FROM PUBLIC;
