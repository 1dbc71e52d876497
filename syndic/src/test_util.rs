//! Values the syndic's unit tests share.

use brine_common::proto::ReturnLoad;
use serde_json::json;

/// A successful `test.ping` return of minion `id` to `jid`.
pub(crate) fn ret(jid: &str, id: &str) -> ReturnLoad {
    ReturnLoad {
        jid: jid.parse().expect("jid"),
        id: id.into(),
        fun: "test.ping".into(),
        fun_args: vec![],
        ret: json!(true),
        retcode: 0,
        success: true,
        out: None,
        trace: None,
    }
}
