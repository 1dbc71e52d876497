//! `salt-run state.event`: the client side of the event stream (the
//! master's side is `client_server::stream_events`). It opens its own
//! client connection (the stream is not a one-answer runner call), waits
//! for the master's `Ready` (subscribed), then prints every event as Salt
//! does: `<tag>\t<json.dumps(data)>`, with `pretty=True` the data indented
//! by 4 with sorted keys, with `--out json` one `{"tag", "data"}` object
//! per line, with `quiet=True` nothing. It stops after `count` events, or
//! when the master goes away (then exit 69).
//!
//! Invariant: memory is bounded by one frame; the master drops events for
//! this client (counted) rather than queueing without end.

use crate::output::{OutFormat, OutOpts, Printer};
use crate::runner::EventArgs;
use brine_common::client::ClientError;
use brine_common::exit;
use brine_common::proto::client::{
    read_frame, write_frame, ClientMsg, ClientReq, SOCKET_NAME, TOKEN_FILE,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use tokio::net::UnixStream;

/// Python's `json.dumps(v)` (one line, `", "`/`": "`) or, pretty, with
/// `indent=4`, through the json outputter.
fn dumps(v: &Value, indent: Option<usize>) -> String {
    let mut opts = OutOpts::new(OutFormat::Json);
    opts.indent = indent;
    let mut p = Printer::new(Vec::new(), opts);
    if p.document(v).and_then(|_| p.finish()).is_err() {
        return v.to_string();
    }
    String::from_utf8_lossy(&p.into_inner())
        .trim_end()
        .to_string()
}

/// One event as `salt-run state.event` prints it (no trailing newline).
pub fn render(tag: &str, data: &Value, pretty: bool, json_lines: bool) -> String {
    if json_lines {
        serde_json::json!({"tag": tag, "data": data}).to_string()
    } else {
        format!("{tag}\t{}", dumps(data, pretty.then_some(4)))
    }
}

async fn subscribe(
    sock_dir: &Path,
    cachedir: &Path,
    args: Vec<Value>,
    kwargs: BTreeMap<String, Value>,
) -> Result<UnixStream, ClientError> {
    let token_path = cachedir.join(TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path).map_err(|source| ClientError::Token {
        path: token_path.display().to_string(),
        source,
    })?;
    let sock = sock_dir.join(SOCKET_NAME);
    let mut s = UnixStream::connect(&sock)
        .await
        .map_err(|source| ClientError::Connect {
            path: sock.display().to_string(),
            source,
        })?;
    let hello = ClientReq::Hello {
        token: token.trim().to_string(),
    };
    let watch = ClientReq::Runner {
        fun: crate::runner::STATE_EVENT.to_string(),
        args,
        kwargs,
    };
    for req in [hello, watch] {
        write_frame(&mut s, &req).await?;
        match read_frame::<ClientMsg, _>(&mut s).await? {
            Some(ClientMsg::Ready) => {}
            Some(ClientMsg::Error { kind, message }) => {
                return Err(ClientError::Refused { kind, message })
            }
            None => return Err(ClientError::Closed),
            Some(_) => return Err(ClientError::Unexpected),
        }
    }
    Ok(s)
}

/// Watch and print; the exit code.
pub async fn run(
    sock_dir: &Path,
    cachedir: &Path,
    args: Vec<Value>,
    kwargs: BTreeMap<String, Value>,
    out: OutFormat,
) -> i32 {
    let opts = EventArgs::of(&args, &kwargs);
    let mut s = match subscribe(sock_dir, cachedir, args, kwargs).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("salt-run: {e}");
            return e.exit_code();
        }
    };
    let json_lines = out == OutFormat::Json;
    let quiet = opts.quiet || out == OutFormat::Quiet;
    let mut seen: u64 = 0;
    let stdout = std::io::stdout();
    loop {
        let v = match read_frame::<ClientMsg, _>(&mut s).await {
            Ok(Some(ClientMsg::Runner(v))) => v,
            Ok(None) if opts.count > 0 && seen >= opts.count => return exit::OK,
            Ok(None) => {
                eprintln!("salt-run: the master closed the event stream");
                return exit::UNAVAILABLE;
            }
            Ok(Some(_)) => {
                eprintln!("salt-run: {}", ClientError::Unexpected);
                return exit::UNAVAILABLE;
            }
            Err(e) => {
                eprintln!("salt-run: {}", ClientError::from(e));
                return exit::UNAVAILABLE;
            }
        };
        let tag = v.get("tag").and_then(Value::as_str).unwrap_or("");
        let data = v.get("data").unwrap_or(&Value::Null);
        if !quiet {
            let mut w = stdout.lock();
            let line = render(tag, data, opts.pretty, json_lines);
            if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
                return exit::OK;
            }
        }
        seen += 1;
        if opts.count > 0 && seen >= opts.count {
            return exit::OK;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_print_as_salts_state_event() {
        let data = json!({"b": [1, 2], "a": "x"});
        assert_eq!(
            render("salt/auth", &data, false, false),
            "salt/auth\t{\"a\": \"x\", \"b\": [1, 2]}"
        );
        assert_eq!(
            render("t", &data, true, false),
            "t\t{\n    \"a\": \"x\",\n    \"b\": [\n        1,\n        2\n    ]\n}"
        );
        let line = render("t", &data, false, true);
        let back: Value = serde_json::from_str(&line).expect("one json object");
        assert_eq!(back, json!({"tag": "t", "data": data}));
        assert!(!line.contains('\n'));
    }
}
