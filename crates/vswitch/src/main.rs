//! The `vswitch` command: run a switch, a demo or a lab of namespaces, and plumb namespaces.

mod cli;
mod client;
mod control;
mod demo;
mod lab;
mod metrics;
mod plumbing;
mod report;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Some(cli::Command::Demo(args)) => demo::run(&args),
        Some(cli::Command::Lab(cmd)) => lab::run(&cmd),
        Some(cli::Command::Ns(cmd)) => plumbing::ns(&cmd),
        Some(cli::Command::Veth(cmd)) => plumbing::veth(&cmd),
        Some(cli::Command::Fdb(cmd)) => client::fdb(&cmd),
        Some(cli::Command::Stats(args)) => client::stats(&args),
        Some(cli::Command::Port(cmd)) => client::port(&cmd),
        Some(cli::Command::Capture(args)) => client::capture(&args),
        None => run::run(&cli.switch),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
