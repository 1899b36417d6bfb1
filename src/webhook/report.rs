//! The delivery report: a delivery read with its attempt log, in the shape [`wire::Delivery`] that
//! the REST extension and `easel deliveries ... --json` both print, so users and operators read
//! one shape.

use crate::ids::{DeliveryId, UserId};
use crate::store::{Store, StoreResult};
use crate::wire;

/// The delivery `id` with every attempt; `None` if there is none (of `user`, when given: another
/// user's delivery is answered exactly like a missing one).
pub async fn delivery_report(
    store: &dyn Store,
    id: DeliveryId,
    user: Option<UserId>,
) -> StoreResult<Option<wire::Delivery>> {
    let delivery = store.get_delivery(id, user).await?;
    Ok(delivery.map(|(delivery, attempts)| wire::Delivery::with_attempts(&delivery, &attempts)))
}
