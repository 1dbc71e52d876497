//! The `key` module: this minion's own key (`key.finger`).
//!
//! Reads `pki_dir/minion.pub` and prints the same fingerprint `salt-key -f`
//! shows on the master, so an operator can compare the two before accepting.

use super::{Call, CallFuture, ExecError, Function, Outcome};
use brine_common::crypto::PublicKey;
use serde_json::json;

pub(super) const FUNCTIONS: &[Function] = &[Function {
    name: "key.finger",
    params: &[],
    varargs: false,
    kwargs: false,
    doc: "Return the minion's public key fingerprint (SHA-256 of the key, as\n\
          ``salt-key -f`` prints it on the master).\n\n\
          CLI Example:\n\n    salt '*' key.finger\n",
    handler: finger,
}];

fn finger<'a>(c: &'a Call<'a>) -> CallFuture<'a> {
    Box::pin(async move {
        let path = c.ctx.pki_dir.join("minion.pub");
        let pem = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| ExecError::Execution(format!("cannot read {}: {e}", path.display())))?;
        let key = PublicKey::from_pem(&pem)
            .map_err(|e| ExecError::Execution(format!("{}: {e}", path.display())))?;
        Ok(Outcome::ok(json!(key.fingerprint())))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::ctx;
    use super::super::Registry;
    use brine_common::crypto::KeyPair;
    use serde_json::json;

    #[tokio::test]
    async fn finger_matches_the_key_on_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let (kp, _) = KeyPair::load_or_generate(dir.path(), "minion").expect("key");
        let mut c = ctx("key.finger", vec![], json!({}));
        c.pki_dir = dir.path().to_path_buf();
        let o = Registry::new().call(c).await;
        assert_eq!(o.ret, json!(kp.public().fingerprint()));
        assert!(o.success);
    }

    #[tokio::test]
    async fn finger_without_key_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut c = ctx("key.finger", vec![], json!({}));
        c.pki_dir = dir.path().to_path_buf();
        let o = Registry::new().call(c).await;
        assert!(!o.success);
        assert!(o.ret.as_str().expect("s").starts_with("ERROR: cannot read"));

        std::fs::write(dir.path().join("minion.pub"), "garbage").expect("write");
        let mut c = ctx("key.finger", vec![], json!({}));
        c.pki_dir = dir.path().to_path_buf();
        let o = Registry::new().call(c).await;
        assert!(o.ret.as_str().expect("s").contains("bad key"));
    }
}
