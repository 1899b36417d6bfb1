//! Typed identifiers. Every id Easel hands out is a UUID, like Leonardo's: version 7, whose first
//! 48 bits are the time it was made and whose other 74 are random. Ids made one after another sort
//! one after another, so a batch of new rows lands on the same few pages of each index instead of
//! a page per row (a B-tree keyed by random ids writes a page per insert). 74 random bits are still
//! far beyond guessing, for the ids in public image paths (`/cdn/`); secrets (API keys, signing
//! secrets) are not ids and keep their own 122 or more random bits. The newtypes keep a
//! generation id from being passed where a user id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id: the time now, then random bits (UUID v7).
            pub fn random() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        /// In the OpenAPI document: a UUID string.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A user (tenant): owns API keys, generations and images.
    UserId
);
uuid_id!(
    /// A production API key's record id (not the secret key itself).
    ApiKeyId
);
uuid_id!(
    /// A generation job and its images.
    GenerationId
);
uuid_id!(
    /// One generated image.
    ImageId
);
uuid_id!(
    /// A variation job (an upscale) of one image.
    VariationId
);
uuid_id!(
    /// A webhook delivery: one event to one receiver, retried until it succeeds or gives up.
    DeliveryId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_lowercase_hyphenated_uuids_and_parse_back() {
        let id = GenerationId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<GenerationId>().unwrap(), id);
        assert!("not-a-uuid".parse::<GenerationId>().is_err());
    }
}
