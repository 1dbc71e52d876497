//! The `system` module: reboot, shut down, power off or halt the host
//! (`system.reboot`, `system.shutdown`, `system.poweroff`, `system.halt`).
//!
//! Salt runs these at once; Brine adds one guard, because a mistyped
//! target would take a fleet down: nothing runs unless the call says
//! `confirm=True`, and without it the call fails saying so. The command
//! each function would run is a pure function ([`command`]), so tests
//! check it without ever running it.

use super::user::handler;
use super::{opt, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::json;

/// The command line for `system.<fun>` with an optional `at_time`
/// (minutes, or `shutdown`'s `hh:mm` / `+m` forms).
pub fn command(fun: &str, at_time: Option<&str>) -> Result<Vec<String>, String> {
    let when = match at_time.map(str::trim).filter(|t| !t.is_empty()) {
        None => "now".to_string(),
        Some(t) if t.chars().all(|c| c.is_ascii_digit()) => format!("+{t}"),
        Some(t)
            if t == "now"
                || t.strip_prefix('+')
                    .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
                || t.split_once(':').is_some_and(|(h, m)| {
                    [h, m].iter().all(|p| {
                        (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit())
                    })
                }) =>
        {
            t.to_string()
        }
        Some(t) => return Err(format!("Invalid at_time {t:?}: use minutes, +m or hh:mm")),
    };
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    Ok(match fun {
        "reboot" => v(&["shutdown", "-r", &when]),
        "shutdown" => v(&["shutdown", "-h", &when]),
        "poweroff" => v(&["poweroff"]),
        "halt" => v(&["halt"]),
        other => return Err(format!("unknown system function {other}")),
    })
}

/// The refusal a call without `confirm=True` gets.
pub fn refusal(fun: &str) -> String {
    format!(
        "system.{fun} was not run: it would take this host down. \
         Call it again with confirm=True to do it."
    )
}

async fn run_guarded(c: &Call<'_>, fun: &'static str) -> Result<Outcome, ExecError> {
    let at_time = c.str_arg("at_time")?;
    let argv = command(fun, at_time.as_deref()).map_err(ExecError::InvalidArgs)?;
    if !c.bool_arg("confirm", false)? {
        return Err(ExecError::Execution(refusal(fun)));
    }
    tracing::warn!(jid = %c.ctx.jid, cmd = %argv.join(" "), "system.{fun} confirmed; running");
    let out = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .await
        .map_err(|e| ExecError::Execution(format!("cannot run {}: {e}", argv[0])))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ret = json!(text.trim_end());
    Ok(match out.status.code() {
        Some(0) => Outcome::ok(ret),
        code => Outcome::with_retcode(ret, code.unwrap_or(1)),
    })
}

handler!(reboot_h, |c| { run_guarded(c, "reboot").await });
handler!(shutdown_h, |c| { run_guarded(c, "shutdown").await });
handler!(poweroff_h, |c| { run_guarded(c, "poweroff").await });
handler!(halt_h, |c| { run_guarded(c, "halt").await });

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "system.reboot",
        params: &[opt("at_time"), opt("confirm")],
        varargs: false,
        kwargs: false,
        doc: "Reboot the system (``shutdown -r``), now or ``at_time`` (minutes, ``+m``\n\
              or ``hh:mm``). Brine refuses unless ``confirm=True`` is given.\n\n\
              CLI Example:\n\n    salt '*' system.reboot confirm=True\n    \
              salt '*' system.reboot at_time=5 confirm=True\n",
        handler: reboot_h,
    },
    Function {
        name: "system.shutdown",
        params: &[opt("at_time"), opt("confirm")],
        varargs: false,
        kwargs: false,
        doc: "Shutdown the system (``shutdown -h``), now or ``at_time``. Brine refuses\n\
              unless ``confirm=True`` is given.\n\n\
              CLI Example:\n\n    salt '*' system.shutdown 5 confirm=True\n",
        handler: shutdown_h,
    },
    Function {
        name: "system.poweroff",
        params: &[opt("confirm")],
        varargs: false,
        kwargs: false,
        doc: "Poweroff a running system. Brine refuses unless ``confirm=True`` is\n\
              given.\n\n\
              CLI Example:\n\n    salt '*' system.poweroff confirm=True\n",
        handler: poweroff_h,
    },
    Function {
        name: "system.halt",
        params: &[opt("confirm")],
        varargs: false,
        kwargs: false,
        doc: "Halt a running system. Brine refuses unless ``confirm=True`` is given.\n\n\
              CLI Example:\n\n    salt '*' system.halt confirm=True\n",
        handler: halt_h,
    },
];

#[cfg(test)]
mod tests {
    use super::super::testutil::run;
    use super::*;

    #[test]
    fn commands() {
        let j = |f: &str, t: Option<&str>| command(f, t).map(|v| v.join(" "));
        assert_eq!(j("reboot", None), Ok("shutdown -r now".into()));
        assert_eq!(j("reboot", Some("5")), Ok("shutdown -r +5".into()));
        assert_eq!(j("shutdown", Some("23:30")), Ok("shutdown -h 23:30".into()));
        assert_eq!(j("poweroff", None), Ok("poweroff".into()));
        assert_eq!(j("halt", None), Ok("halt".into()));
        assert!(j("reboot", Some("now; rm -rf /")).is_err());
        assert!(j("explode", None).is_err());
    }

    #[tokio::test]
    async fn refused_without_confirm() {
        for f in ["reboot", "shutdown", "poweroff", "halt"] {
            let o = run(&format!("system.{f}"), vec![], json!({})).await;
            assert!(!o.success);
            assert_eq!(o.ret, json!(format!("ERROR: {}", refusal(f))));
            let o = run(&format!("system.{f}"), vec![], json!({"confirm": false})).await;
            assert!(!o.success);
        }
        let o = run("system.reboot", vec![json!("bad time")], json!({})).await;
        assert!(o
            .ret
            .as_str()
            .is_some_and(|s| s.contains("Invalid at_time")));
    }
}
