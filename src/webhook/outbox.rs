//! The producer side of deliveries: when a generation finishes, build its callback (payload,
//! receiver) so the store can insert it in the same transaction, and hand it to this node's engine
//! straight after the commit.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::engine::DeliveryQueue;
use super::payload;
use crate::clock::Millis;
use crate::ids::DeliveryId;
use crate::images::ImageStore;
use crate::models::{Catalogue, Model};
use crate::secrets::{MasterKey, mask, seal_context};
use crate::store::{DeliveryJob, Generation, NewDelivery, Store, StoreResult};

/// Builds deliveries for finished generations.
pub struct Outbox {
    pub master_key: MasterKey,
    pub images: ImageStore,
    pub catalogue: Arc<Catalogue>,
    /// This node's engine; `None` when this node does not deliver (the delivery is then left for
    /// whichever node claims it).
    pub queue: Option<DeliveryQueue>,
}

/// A delivery ready to insert, and the engine slot reserved for it.
pub struct PreparedDelivery<'a> {
    pub delivery: NewDelivery,
    slot: Option<mpsc::Permit<'a, DeliveryJob>>,
    outbox: &'a Outbox,
}

impl PreparedDelivery<'_> {
    /// After the commit: send it now (reserved slot) or wake the engine to claim it.
    pub fn dispatch(self) {
        match self.slot {
            Some(slot) => slot.send(DeliveryJob::from_new(&self.delivery)),
            None => {
                if let Some(queue) = &self.outbox.queue {
                    queue.wake.notify_one();
                }
            }
        }
    }
}

impl Outbox {
    /// The callback for `generation` (finished, images filled in), or `None` if the key that made
    /// it has no webhook URL.
    pub async fn prepare(
        &self,
        store: &dyn Store,
        generation: &Generation,
        at: Millis,
    ) -> StoreResult<Option<PreparedDelivery<'_>>> {
        let Some(api_key) = store.recent_api_key(generation.api_key_id).await? else { return Ok(None) };
        let Some(url) = api_key.webhook_url.clone() else { return Ok(None) };
        let masked = api_key.webhook_api_key_sealed.as_ref().map(|sealed| {
            match self.master_key.open(sealed, &seal_context(api_key.id, "webhook_api_key")) {
                Ok(secret) => mask(&String::from_utf8_lossy(&secret)),
                Err(_) => mask(""),
            }
        });
        let model = self.catalogue.get(&generation.params.model_id).cloned().unwrap_or_else(|| Model {
            id: generation.params.model_id,
            name: "Removed model".into(),
            description: String::new(),
            sd_version: generation.params.sd_version.clone(),
            width: generation.params.width,
            height: generation.params.height,
            featured: false,
            nsfw: false,
            created_at: generation.created_at,
            backends: Vec::new(),
            backend_model: None,
            size_multiple: 8,
        });
        let body = payload::generation_event(generation, &api_key, masked.as_deref(), &model, &self.images, at);
        let endpoint = endpoint_of(&url);
        // Straight to the engine only while it has room for this receiver; otherwise the delivery
        // waits in the store like any other (memory stays bounded whatever the receivers do).
        // A disabled webhook's deliveries are held in the store, not handed to the engine (a
        // disable made elsewhere shows within `api.auth_cache_ttl`: `Store::recent_api_key`).
        let held = api_key.webhook_disabled_at.is_some();
        let slot = self.queue.as_ref().filter(|_| !held).and_then(|queue| {
            let engine = queue.engine.upgrade()?;
            if !engine.has_room_for(&endpoint) {
                return None;
            }
            queue.handoff.try_reserve().ok()
        });
        let lease = match (&slot, &self.queue) {
            (Some(_), Some(queue)) => Some((queue.node_id.clone(), at + queue.lease.as_millis() as Millis)),
            _ => None,
        };
        let delivery = NewDelivery {
            id: DeliveryId::random(),
            generation_id: generation.id,
            user_id: generation.user_id,
            api_key_id: api_key.id,
            event_type: payload::event_type(generation).to_string(),
            endpoint,
            url,
            payload: body,
            created_at: at,
            lease,
        };
        Ok(Some(PreparedDelivery { delivery, slot, outbox: self }))
    }
}

/// `scheme://host:port`: what per-receiver concurrency limits count by.
pub fn endpoint_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_scheme_host_and_port() {
        assert_eq!(endpoint_of("https://hooks.example.com/a?b=c"), "https://hooks.example.com:443");
        assert_eq!(endpoint_of("https://hooks.example.com:8443/x"), "https://hooks.example.com:8443");
        assert_eq!(endpoint_of("http://127.0.0.1/x"), "http://127.0.0.1:80");
        assert_eq!(endpoint_of("https://[::1]:9/x"), "https://[::1]:9");
    }
}
