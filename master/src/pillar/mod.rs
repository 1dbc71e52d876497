//! Pillar: compiled on the master from `pillar_roots` for one minion,
//! answered to that minion only (or, through syndics, sealed to its key).

use crate::state::MasterState;
use brine_common::proto::{Refusal, ReplyBody, RequestBody, Role};
use std::sync::Arc;

/// Answer a pillar request (`Pillar`, `PillarFor`) from signed-in peer `id`.
pub(crate) async fn serve(
    _state: Arc<MasterState>,
    _id: String,
    _role: Role,
    _body: RequestBody,
) -> ReplyBody {
    ReplyBody::Refused(Refusal::Unavailable("this master has no pillar yet".into()))
}
