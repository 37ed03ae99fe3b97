use clap::{CommandFactory, Parser};
use seeder::cli::{load_dotenv, Cli};
use seeder::run::{run, EXIT_FAILURE};
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;

fn main() -> ExitCode {
    load_dotenv(std::path::Path::new(".env"));
    let cli = Cli::parse();
    let entropy = RandomState::new().hash_one(std::process::id());
    let plan = match cli.resolve(seeder::timefmt::now_us(), entropy) {
        Ok(p) => p,
        Err(msg) => Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, msg)
            .exit(),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("seeder: error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(plan)) {
        Ok(summary) => {
            println!("{}", summary.line());
            ExitCode::SUCCESS
        }
        Err(f) => {
            if f.code == seeder::run::EXIT_INTERRUPTED {
                eprintln!("seeder: {}", f.message);
            } else {
                eprintln!("seeder: error: {}", f.message);
            }
            if let Some(s) = f.summary {
                println!("{}", s.line());
            }
            ExitCode::from(f.code)
        }
    }
}
