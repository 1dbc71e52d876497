//! `salt`'s command line: the clap [`SaltArgs`] (Salt's flags and their
//! meanings) and the target type the flags choose. Parsing only; what the
//! flags do is in the driver ([`super::run`]) and its pure parts.

use crate::output::OutputArgs;
use brine_common::proto::TargetType;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "salt",
    version,
    about = "Run a function on the minions a target matches"
)]
pub struct SaltArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    #[command(flatten)]
    pub flags: TargetFlags,
    /// Target is a compound expression (G@os:Debian and web*).
    #[arg(short = 'C', long = "compound", group = "tt")]
    pub compound: bool,
    /// Seconds to wait before asking minions whether they still run the job.
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Seconds to wait for answers to saltutil.find_job.
    #[arg(long = "gather-job-timeout")]
    pub gather_job_timeout: Option<u64>,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Write the output to this file instead of stdout.
    #[arg(long = "out-file", visible_alias = "output-file")]
    pub out_file: Option<PathBuf>,
    /// Wait for every return and print one document.
    #[arg(short = 's', long = "static")]
    pub static_mode: bool,
    /// Print the jid and the minions that did not return.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print the jid.
    #[arg(long = "show-jid")]
    pub show_jid: bool,
    /// Do not print minions that did not return.
    #[arg(long = "hide-timeout")]
    pub hide_timeout: bool,
    /// Print a summary of the run at the end.
    #[arg(long)]
    pub summary: bool,
    /// Show a progress bar (terminal only).
    #[arg(short = 'p', long)]
    pub progress: bool,
    /// Publish and exit at once, printing the jid.
    #[arg(long = "async")]
    pub async_: bool,
    /// Run on at most N (or N%) minions at a time.
    #[arg(short = 'b', long = "batch-size", visible_alias = "batch")]
    pub batch: Option<String>,
    /// Seconds to wait after a minion returns before filling its batch slot.
    #[arg(long = "batch-wait", default_value_t = 0.0)]
    pub batch_wait: f64,
    /// Stop at the first failing minion.
    #[arg(long)]
    pub failhard: bool,
    /// Exit with the highest retcode of the minions.
    #[arg(long = "retcode-passthrough")]
    pub retcode_passthrough: bool,
    /// Target expression.
    pub target: String,
    /// Function to run (module.function).
    pub fun: String,
    /// Arguments: positional values and key=value pairs.
    pub args: Vec<String>,
}

/// The targeting flags `salt` and `salt-cp` share (Salt's; `-C` is
/// `salt`'s compound but `salt-cp`'s `--chunked`, so each command defines
/// its own compound flag in the same `tt` group).
#[derive(clap::Args, Debug, Clone)]
pub struct TargetFlags {
    /// Target is a regular expression (PCRE) on minion ids.
    #[arg(short = 'E', long = "pcre", group = "tt")]
    pub pcre: bool,
    /// Target is a comma-separated list of ids.
    #[arg(short = 'L', long = "list", group = "tt")]
    pub list: bool,
    /// Target is a grain glob: key:value.
    #[arg(short = 'G', long = "grain", group = "tt")]
    pub grain: bool,
    /// Target is a grain regex: key:regex.
    #[arg(short = 'P', long = "grain-pcre", group = "tt")]
    pub grain_pcre: bool,
    /// Target is an IP address or CIDR network.
    #[arg(short = 'S', long = "ipcidr", group = "tt")]
    pub ipcidr: bool,
    /// Target is a nodegroup from the master config.
    #[arg(short = 'N', long = "nodegroup", group = "tt")]
    pub nodegroup: bool,
    /// Target is a pillar glob: key:value (the master's cache of compiled
    /// pillars; a minion whose pillar it has not compiled may match).
    #[arg(short = 'I', long = "pillar", group = "tt")]
    pub pillar: bool,
    /// Target is a pillar regex: key:regex.
    #[arg(short = 'J', long = "pillar-pcre", group = "tt")]
    pub pillar_pcre: bool,
    /// Grain and pillar key path delimiter.
    #[arg(long, default_value = ":")]
    pub delimiter: String,
}

impl TargetFlags {
    /// The target type, once `target` is known to parse with it (and this
    /// master's nodegroups); a target that does not is said on stderr,
    /// prefixed with `prog`, and is a usage error (64).
    pub fn checked_type(
        &self,
        prog: &str,
        target: &str,
        compound: bool,
        nodegroups: &std::collections::BTreeMap<String, String>,
    ) -> Result<TargetType, i32> {
        let tgt_type = self.tgt_type(compound);
        match brine_common::target::parse_with_delimiter(
            target,
            tgt_type,
            nodegroups,
            &self.delimiter,
        ) {
            Ok(_) => Ok(tgt_type),
            Err(e) => {
                eprintln!("{prog}: invalid target '{target}': {e}");
                Err(brine_common::exit::USAGE)
            }
        }
    }

    /// The target type the flags choose (they are one clap group, so at
    /// most one is set; `compound` is the command's own flag): glob when
    /// none is.
    pub fn tgt_type(&self, compound: bool) -> TargetType {
        [
            (self.pcre, TargetType::Pcre),
            (self.list, TargetType::List),
            (self.grain, TargetType::Grain),
            (self.grain_pcre, TargetType::GrainPcre),
            (self.ipcidr, TargetType::Ipcidr),
            (compound, TargetType::Compound),
            (self.nodegroup, TargetType::Nodegroup),
            (self.pillar, TargetType::Pillar),
            (self.pillar_pcre, TargetType::PillarPcre),
        ]
        .into_iter()
        .find(|(set, _)| *set)
        .map_or(TargetType::Glob, |(_, t)| t)
    }
}

impl SaltArgs {
    pub fn tgt_type(&self) -> TargetType {
        self.flags.tgt_type(self.compound)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> Result<SaltArgs, clap::Error> {
        SaltArgs::try_parse_from(std::iter::once("salt").chain(argv.iter().copied()))
    }

    #[test]
    fn each_flag_chooses_its_target_type_and_glob_is_the_default() {
        let cases = [
            (vec![], TargetType::Glob),
            (vec!["-E"], TargetType::Pcre),
            (vec!["-L"], TargetType::List),
            (vec!["-G"], TargetType::Grain),
            (vec!["-P"], TargetType::GrainPcre),
            (vec!["-S"], TargetType::Ipcidr),
            (vec!["-C"], TargetType::Compound),
            (vec!["-N"], TargetType::Nodegroup),
            (vec!["-I"], TargetType::Pillar),
            (vec!["-J"], TargetType::PillarPcre),
            (vec!["--grain-pcre"], TargetType::GrainPcre),
            (vec!["--pillar"], TargetType::Pillar),
            (vec!["--pillar-pcre"], TargetType::PillarPcre),
        ];
        for (flags, want) in cases {
            let mut argv = flags.clone();
            argv.extend(["web*", "test.ping"]);
            let a = parse(&argv).unwrap();
            assert_eq!(a.tgt_type(), want, "{flags:?}");
        }
    }

    #[test]
    fn two_target_types_are_a_usage_error() {
        let e = parse(&["-E", "-L", "x", "test.ping"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = parse(&["-I", "-G", "x:y", "test.ping"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = parse(&["-I", "-J", "x:y", "test.ping"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn pillar_targets_take_the_delimiter() {
        let a = parse(&["-I", "--delimiter", ".", "db.host.db1", "test.ping"]).unwrap();
        assert_eq!(a.tgt_type(), TargetType::Pillar);
        assert_eq!(a.target, "db.host.db1");
        assert_eq!(a.flags.delimiter, ".");
        let help = SaltArgs::command().render_long_help().to_string();
        assert!(
            help.contains("-I, --pillar\n") && help.contains("-J, --pillar-pcre\n"),
            "{help}"
        );
    }

    #[test]
    fn batch_flags_and_aliases() {
        let a = parse(&["*", "--batch", "25%", "--batch-wait", "1.5", "test.ping"]).unwrap();
        assert_eq!(a.batch.as_deref(), Some("25%"));
        assert_eq!(a.batch_wait, 1.5);
        let a = parse(&["-b", "3", "*", "test.ping"]).unwrap();
        assert_eq!(a.batch.as_deref(), Some("3"));
        assert_eq!(a.batch_wait, 0.0);
        let a = parse(&["*", "test.ping"]).unwrap();
        assert_eq!(a.batch, None);
    }

    #[test]
    fn positional_arguments_and_timeouts() {
        let a = parse(&[
            "-t",
            "7",
            "--gather-job-timeout",
            "3",
            "--output-file",
            "/tmp/x",
            "*",
            "cmd.run",
            "uptime",
            "cwd=/",
        ])
        .unwrap();
        assert_eq!(a.timeout, Some(7));
        assert_eq!(a.gather_job_timeout, Some(3));
        assert_eq!(a.out_file, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.target, "*");
        assert_eq!(a.fun, "cmd.run");
        assert_eq!(a.args, vec!["uptime", "cwd=/"]);
        assert_eq!(a.flags.delimiter, ":");
        assert!(parse(&["*"]).is_err(), "the function is required");
    }
}
