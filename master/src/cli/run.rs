//! `salt-run FUN [ARGS]`: runner functions executed by the master
//! (see `crate::runner`); this side parses, sends and prints.

use crate::output::{OutFormat, OutputArgs, Printer};
use brine_common::client::LocalClient;
use brine_common::config::MasterConfig;
use brine_common::exit;
use clap::Parser;
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "salt-run",
    version,
    about = "Run a master-side runner function"
)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: brine_common::cli::ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Runner function, e.g. jobs.lookup_jid.
    pub fun: String,
    /// Arguments: positional values, key=value pairs and --flags
    /// (`--missing` is `missing=True`, `--search-function F` is
    /// `search_function=F`).
    #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
    pub args: Vec<String>,
}

/// Turn `--flag` / `--key value` words into Salt's `key=value` form.
pub fn normalise_words(words: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(name) = w.strip_prefix("--") {
            let key = name.replace('-', "_");
            if let Some((k, v)) = key.split_once('=') {
                out.push(format!("{k}={v}"));
            } else if i + 1 < words.len()
                && !words[i + 1].starts_with("--")
                && !words[i + 1].contains('=')
                && key.starts_with("search")
            {
                out.push(format!("{key}={}", words[i + 1]));
                i += 1;
            } else {
                out.push(format!("{key}=True"));
            }
        } else {
            out.push(w.clone());
        }
        i += 1;
    }
    out
}

/// Pull the output flags out of the trailing words (Salt accepts options
/// anywhere on the line).
fn take_output_flags(args: &mut RunArgs) -> Result<(), String> {
    let mut rest = Vec::new();
    let mut words = std::mem::take(&mut args.args).into_iter();
    while let Some(w) = words.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (w.clone(), None),
        };
        match flag.as_str() {
            "--out" | "--output" | "--out-indent" | "--output-indent" => {
                let v = match inline.or_else(|| words.next()) {
                    Some(v) => v,
                    None => return Err(format!("{flag} needs a value")),
                };
                if flag.ends_with("indent") {
                    args.output.out_indent =
                        Some(v.parse().map_err(|_| format!("invalid {flag} '{v}'"))?);
                } else {
                    args.output.out = <OutFormat as clap::ValueEnum>::from_str(&v, true)
                        .map_err(|_| format!("unknown outputter '{v}'"))?;
                }
            }
            "--no-color" | "--no-colour" => args.output.no_color = true,
            _ => rest.push(w),
        }
    }
    args.args = rest;
    Ok(())
}

pub async fn run(mut args: RunArgs, cfg: &MasterConfig) -> i32 {
    if let Err(e) = take_output_flags(&mut args) {
        eprintln!("salt-run: {e}");
        return exit::USAGE;
    }
    let words = normalise_words(&args.args);
    let (pos, kw) = brine_common::args::parse_cli_args(&words);
    if args.fun == crate::runner::STATE_EVENT {
        return super::event::run(&cfg.sock_dir, &cfg.cachedir, pos, kw, args.output.out).await;
    }
    let mut client = match LocalClient::connect(&cfg.sock_dir, &cfg.cachedir).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("salt-run: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let v = match client.runner(&args.fun, pos, kw).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("salt-run: {e}");
            return exit::JOB_FAILED;
        }
    };
    let mut p = Printer::new(
        std::io::stdout(),
        args.output
            .opts(false, std::io::IsTerminal::is_terminal(&std::io::stdout())),
    );
    if let Err(e) = p.document(&v).and_then(|_| p.finish()) {
        eprintln!("salt-run: output failed: {e}");
        return exit::SOFTWARE;
    }
    // jobs.exit_success: non-zero when any minion failed (scripts rely on it).
    if args.fun == "jobs.exit_success" {
        if let Value::Object(m) = &v {
            if m.values().any(|x| x == &Value::Bool(false)) {
                return exit::JOB_FAILED;
            }
        }
    }
    exit::OK
}
