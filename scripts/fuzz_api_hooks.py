"""schemathesis hooks for scripts/fuzz-api.sh (loaded through SCHEMATHESIS_HOOKS).

- error_bodies_are_json: every 4xx and 5xx is the service's JSON error,
  {"error": {"status", "code", "message"}}, with the response's status and a
  known code.
- map_query: what a schema cannot say. Most generated ranges would be start
  >= end or longer than the maximum (a 400 before any handler work); half of
  the cases get an end 1 minute to 48 hours after their start, half of those a
  start inside the seeded data, and half of the server and metric names are
  replaced by seeded ones, so fuzzing reaches the queries and the analysis.
  The choices are a hash of the generated values (deterministic with --seed).
"""

import datetime
import os
import zlib

import schemathesis

CODES = set(os.environ["FUZZ_ERROR_CODES"].split(","))
SERVERS = os.environ["FUZZ_SERVERS"].split(",")
METRICS = os.environ["FUZZ_METRICS"].split(",")
DATA_START = datetime.datetime.fromisoformat(os.environ["FUZZ_DATA_START"])
DATA_HOURS = int(os.environ["FUZZ_DATA_HOURS"])


@schemathesis.check
def error_bodies_are_json(ctx, response, case):
    """Every 4xx/5xx answer is a JSON error body naming its status and a known code."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        raise AssertionError(f"{response.status_code} with a body that is not JSON: {e}")
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        raise AssertionError(f"{response.status_code} without an `error` object: {body!r}")
    if err.get("status") != response.status_code:
        raise AssertionError(f"error.status {err.get('status')} != HTTP {response.status_code}")
    if err.get("code") not in CODES:
        raise AssertionError(f"unknown error.code {err.get('code')!r}")
    if not isinstance(err.get("message"), str) or not err["message"]:
        raise AssertionError("error.message is missing or empty")
    return None


def _h(*parts):
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def _time(s):
    if not isinstance(s, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t


@schemathesis.hook
def map_query(ctx, query):
    if not isinstance(query, dict):
        return query
    h = _h(*sorted(query.items()))
    start = _time(query.get("start"))
    if start is not None and isinstance(query.get("end"), str) and h % 2 == 0:
        if (h >> 1) % 2 == 0:
            start = DATA_START + datetime.timedelta(minutes=(h >> 2) % (DATA_HOURS * 60))
            query["start"] = start.isoformat()
        end = start + datetime.timedelta(minutes=1 + (h >> 8) % (48 * 60))
        if end.year <= 9999:
            query["end"] = end.isoformat()
    if isinstance(query.get("server"), str) and (h >> 3) % 2 == 0:
        query["server"] = SERVERS[(h >> 4) % len(SERVERS)]
    if isinstance(query.get("metric"), str) and (h >> 5) % 2 == 0:
        query["metric"] = METRICS[(h >> 6) % len(METRICS)]
    return query
