//! The `vswitch` command as a library: the binary is [`main`]; the fuzz targets reach the
//! control protocol and the config file through [`fuzzing`].

/// `println!` that ignores a closed standard output (e.g. piped into `head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed standard output.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod cli;
mod client;
mod config;
mod control;
mod demo;
mod lab;
mod metrics;
mod plumbing;
mod privileges;
mod report;
mod run;
mod settings;

#[doc(hidden)]
pub mod fuzzing;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

/// The `vswitch` command: parses the command line, runs what it asks, says why it failed.
pub fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
        Some(cli::Command::Vlan(cmd)) => client::vlan(&cmd),
        Some(cli::Command::Macvlan(cmd)) => client::macvlan(&cmd),
        Some(cli::Command::Capture(args)) => client::capture(&args),
        Some(cli::Command::Pipeline(cmd)) => client::pipeline(&cmd),
        Some(cli::Command::Config(cli::ConfigCommand::Check { file })) => check_config(&file),
        Some(cli::Command::Cleanup { name }) => control::cleanup(&name),
        None => run::resolve(cli.switch, &matches).and_then(run::run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vswitch config check FILE`.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let ports = check_switch_config(&config::Config::load(file)?)?;
    outln!("{}: OK ({ports} ports)", file.display());
    Ok(())
}

/// What `config check` checks of a loaded file (everything the switch would check at start,
/// before it makes anything); the number of ports it names.
fn check_switch_config(config: &config::Config) -> anyhow::Result<usize> {
    // As `vswitch --config FILE` would start: `--ports` may come from the file.
    let matches = cli::Cli::command().try_get_matches_from(["vswitch", "--config", "-"])?;
    let args = cli::Cli::from_arg_matches(&matches)?.switch;
    let settings = run::resolve_with(args, Some(config), &matches)?;
    Ok(settings.ports.specs.len())
}
