//! Typed access on top of any [`MetadataStore`]: values are encoded as pretty JSON (readable
//! with `cat`, `jq` or `consul kv get`) and decoded with serde.
//!
//! The extension trait is implemented for every store, `dyn MetadataStore` included, so callers
//! write `store.get_typed::<TopicSpec>(ObjectKind::Topic, &key)`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    ExpectedVersion, FencingToken, MetadataStore, ObjectKey, ObjectKind, StoreError, Version,
};

/// A decoded object with its key and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The object's key.
    pub key: ObjectKey,
    /// Version of the object's last write; pass it back as the expected version to update it.
    pub version: Version,
    /// The decoded value.
    pub value: T,
}

/// Every object of one kind, decoded, as of `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypedListing<T> {
    /// The revision to watch from to see every later change.
    pub revision: Version,
    /// The objects, sorted by key.
    pub objects: Vec<Versioned<T>>,
}

/// Serde get/put/list over a byte-level store.
pub trait TypedStore {
    /// Reads and decodes `(kind, key)`.
    fn get_typed<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
    ) -> Result<Option<Versioned<T>>, StoreError>;

    /// Lists and decodes every object of `kind`. One undecodable object fails the whole listing
    /// with [`StoreError::Decode`] naming it.
    fn list_typed<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
    ) -> Result<TypedListing<T>, StoreError>;

    /// Encodes `value` as pretty JSON and writes it if the object is as `expected`.
    fn put_typed<T: Serialize>(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &T,
        expected: ExpectedVersion,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError>;
}

impl<S: MetadataStore + ?Sized> TypedStore for S {
    fn get_typed<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let Some(object) = self.get(kind, key)? else { return Ok(None) };
        let value = decode(kind, &object.key, &object.value)?;
        Ok(Some(Versioned { key: object.key, version: object.version, value }))
    }

    fn list_typed<T: DeserializeOwned>(
        &self,
        kind: ObjectKind,
    ) -> Result<TypedListing<T>, StoreError> {
        let listing = self.list(kind)?;
        let mut objects = Vec::with_capacity(listing.objects.len());
        for object in listing.objects {
            let value = decode(kind, &object.key, &object.value)?;
            objects.push(Versioned { key: object.key, version: object.version, value });
        }
        Ok(TypedListing { revision: listing.revision, objects })
    }

    fn put_typed<T: Serialize>(
        &self,
        kind: ObjectKind,
        key: &ObjectKey,
        value: &T,
        expected: ExpectedVersion,
        fence: Option<&FencingToken>,
    ) -> Result<Version, StoreError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Encode {
            kind,
            key: key.to_string(),
            source,
        })?;
        self.put(kind, key, &bytes, expected, fence)
    }
}

/// Decodes one stored JSON document.
pub fn decode<T: DeserializeOwned>(
    kind: ObjectKind,
    key: &ObjectKey,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        kind,
        key: key.to_string(),
        source,
    })
}
