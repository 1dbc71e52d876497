//! The file server: `salt://` files from `file_roots` (and, on a syndic,
//! from the master above through a content-addressed cache), served in
//! chunks over the request channel; `cp.push` uploads.

// Used by the file server and pillar as they land (allow removed then).
#[allow(dead_code)]
pub mod roots;

use crate::state::MasterState;
use brine_common::proto::{Refusal, ReplyBody, RequestBody, Role};
use std::sync::Arc;

/// Answer a file server request (`FileFind`, `FileChunk`, `FileList`,
/// `FilePush`) from signed-in peer `id`.
pub(crate) async fn serve(
    _state: Arc<MasterState>,
    _id: String,
    _role: Role,
    _body: RequestBody,
) -> ReplyBody {
    ReplyBody::Refused(Refusal::Unavailable(
        "this master has no file server yet".into(),
    ))
}
