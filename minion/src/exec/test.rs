//! The `test` module: liveness and argument checks (`test.ping`,
//! `test.echo`, `test.sleep`, `test.version`, `test.arg`).
//!
//! None of these touch the host; `test.sleep` is the one long-running
//! function and it stops as soon as the job is cancelled.

use super::{opt, req, Call, CallFuture, ExecError, Function, Outcome};
use serde_json::{json, Value};
use std::time::Duration;

pub(super) const FUNCTIONS: &[Function] = &[
    Function {
        name: "test.ping",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Used to make sure the minion is up and responding. Not an ICMP ping.\n\n\
              Returns ``True``.\n\nCLI Example:\n\n    salt '*' test.ping\n",
        handler: ping,
    },
    Function {
        name: "test.echo",
        params: &[req("text")],
        varargs: false,
        kwargs: false,
        doc: "Return a string - used for testing the connection\n\n\
              CLI Example:\n\n    salt '*' test.echo 'foo bar baz quo qux'\n",
        handler: echo,
    },
    Function {
        name: "test.sleep",
        params: &[req("length")],
        varargs: false,
        kwargs: false,
        doc: "Instruct the minion to initiate a process that will sleep for a given\n\
              period of time (seconds). Returns ``True``; stops early if the job is\n\
              killed (``saltutil.kill_job``).\n\n\
              CLI Example:\n\n    salt '*' test.sleep 20\n",
        handler: sleep,
    },
    Function {
        name: "test.version",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Return the version of Brine (Salt-compatible minion) on the minion\n\n\
              CLI Example:\n\n    salt '*' test.version\n",
        handler: version,
    },
    Function {
        name: "test.arg",
        params: &[],
        varargs: true,
        kwargs: true,
        doc: "Print out the data passed into the function ``*args`` and ``**kwargs``,\n\
              this is used to both test the publication data and cli argument passing,\n\
              but also to display the information available within the publication\n\
              data.\n\n\
              :return: ``{\"args\": args, \"kwargs\": kwargs}``\n\n\
              CLI Example:\n\n    salt '*' test.arg 1 \"two\" 3.1 txt=\"hello\" wow='{a: 1, b: \"hello\"}'\n",
        handler: arg,
    },
    Function {
        name: "test.true",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Always return ``True``\n\nCLI Example:\n\n    salt '*' test.true\n",
        handler: ping,
    },
    Function {
        name: "test.false",
        params: &[],
        varargs: false,
        kwargs: false,
        doc: "Always return ``False``\n\nCLI Example:\n\n    salt '*' test.false\n",
        handler: false_,
    },
    Function {
        name: "test.retcode",
        params: &[opt("code")],
        varargs: false,
        kwargs: false,
        doc: "Test that the returncode system is functioning correctly: the job ends\n\
              with retcode ``code`` (default 42) and returns ``True``.\n\n\
              CLI Example:\n\n    salt '*' test.retcode 42\n",
        handler: retcode,
    },
];

fn ping<'a>(_c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async { Ok(Outcome::ok(json!(true))) })
}

fn false_<'a>(_c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async { Ok(Outcome::ok(json!(false))) })
}

fn echo<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        Ok(Outcome::ok(
            c.args.named.get("text").cloned().unwrap_or(Value::Null),
        ))
    })
}

fn sleep<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let secs = c.f64_arg("length")?.unwrap_or(0.0);
        let length = Duration::try_from_secs_f64(secs).map_err(|_| {
            ExecError::InvalidArgs(format!("length must be a non-negative number, not {secs}"))
        })?;
        tokio::select! {
            _ = tokio::time::sleep(length) => Ok(Outcome::ok(json!(true))),
            _ = c.ctx.cancel.cancelled() => Err(ExecError::Cancelled),
        }
    })
}

fn version<'a>(_c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async { Ok(Outcome::ok(json!(env!("CARGO_PKG_VERSION")))) })
}

fn arg<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        Ok(Outcome::ok(json!({
            "args": c.args.varargs,
            "kwargs": c.args.kwargs,
        })))
    })
}

fn retcode<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let code = c.f64_arg("code")?.unwrap_or(42.0);
        if code.fract() != 0.0 || code < f64::from(i32::MIN) || code > f64::from(i32::MAX) {
            return Err(ExecError::InvalidArgs(format!(
                "code must be an integer, not {code}"
            )));
        }
        // Range and integrality were checked just above.
        Ok(Outcome::with_retcode(json!(true), code as i32))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{ctx, run};
    use super::super::{Outcome, Registry, RETCODE_ERROR};
    use serde_json::json;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn ping_echo_version() {
        assert_eq!(
            run("test.ping", vec![], json!({})).await,
            Outcome::ok(json!(true))
        );
        assert_eq!(
            run("test.echo", vec![json!("foo bar")], json!({})).await,
            Outcome::ok(json!("foo bar"))
        );
        assert_eq!(
            run("test.echo", vec![json!(5)], json!({})).await.ret,
            json!(5)
        );
        assert_eq!(
            run("test.version", vec![], json!({})).await.ret,
            json!(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(run("test.false", vec![], json!({})).await.ret, json!(false));
        assert_eq!(run("test.true", vec![], json!({})).await.ret, json!(true));
    }

    #[tokio::test]
    async fn arg_returns_args_and_kwargs() {
        let o = run(
            "test.arg",
            vec![json!(1), json!("two"), json!(3.1)],
            json!({"txt": "hello", "wow": {"a": 1}, "__pub_fun": "test.arg"}),
        )
        .await;
        assert_eq!(
            o.ret,
            json!({"args": [1, "two", 3.1], "kwargs": {"txt": "hello", "wow": {"a": 1}}})
        );
    }

    #[tokio::test]
    async fn retcode_sets_job_retcode() {
        let o = run("test.retcode", vec![json!(3)], json!({})).await;
        assert_eq!(o.retcode, 3);
        assert!(!o.success);
        assert_eq!(
            run("test.retcode", vec![json!(0)], json!({})).await.retcode,
            0
        );
        assert_eq!(
            run("test.retcode", vec![json!(1.5)], json!({}))
                .await
                .retcode,
            RETCODE_ERROR
        );
    }

    #[tokio::test]
    async fn sleep_sleeps_and_rejects_bad_lengths() {
        let o = run("test.sleep", vec![json!("0.05")], json!({})).await;
        assert_eq!(o, Outcome::ok(json!(true)));
        for bad in [json!(-1), json!("soon"), json!([1])] {
            let o = run("test.sleep", vec![bad], json!({})).await;
            assert!(!o.success);
            assert!(o
                .ret
                .as_str()
                .expect("s")
                .starts_with("Passed invalid arguments to test.sleep"));
        }
    }

    #[tokio::test]
    async fn sleep_honours_cancel() {
        let c = ctx("test.sleep", vec![json!(30)], json!({}));
        let token = c.cancel.clone();
        let reg = Registry::new();
        let started = Instant::now();
        let (o, ()) = tokio::join!(reg.call(c), async { token.cancel() });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!o.success);
        assert_eq!(o.ret, json!("ERROR: job was cancelled"));
    }
}
