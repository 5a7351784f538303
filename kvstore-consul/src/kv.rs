//! The KV store: get, recursive get, key listing, put (flags, CAS), delete (CAS, recursive).
//!
//! Invariants: a missing key is `Ok(None)` (or an empty list), never an error; a value over
//! [`VALUE_BYTES_MAX`] is refused before anything is sent. CAS writes answer `Ok(false)` when
//! the index did not match; nothing else is reported as `false`.

use crate::client::{encode_path, Blocking, Call, ConsulClient, Reply};
use crate::error::ConsulError;
use crate::types::{ConsulIndex, Indexed, KvEntry, RawKvEntry, SessionId};

/// Largest value Consul accepts by default (`kv_max_value_size`, 512 KiB).
pub const VALUE_BYTES_MAX: usize = 512 * 1024;

/// Options of [`ConsulClient::kv_put_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Opaque flags stored with the value.
    pub flags: u64,
    /// Write only if the key's `ModifyIndex` equals this; `ConsulIndex::new(0)` means "only if
    /// the key does not exist".
    pub cas: Option<ConsulIndex>,
}

/// Refuses a value Consul would refuse, before sending it.
pub(crate) fn check_value_size(key: &str, value: &[u8]) -> Result<(), ConsulError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(ConsulError::ValueTooLarge {
            key: key.to_string(),
            size_bytes: value.len(),
            size_bytes_max: VALUE_BYTES_MAX,
        });
    }
    Ok(())
}

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", encode_path(key))
}

fn decode_entries(reply: &Reply) -> Result<Vec<KvEntry>, ConsulError> {
    let raw: Vec<RawKvEntry> = reply.json()?;
    raw.into_iter()
        .map(|entry| entry.into_entry().map_err(|detail| reply.decode_error(detail)))
        .collect()
}

impl ConsulClient {
    /// The entry at `key`, or `None` when the key does not exist.
    ///
    /// # Errors
    /// Transport errors and error statuses (e.g. [`ConsulError::PermissionDenied`]).
    ///
    /// ```no_run
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// match client.kv_get("sluice/topics/orders")? {
    ///     Some(entry) => println!("{} bytes at index {}", entry.value.len(), entry.modify_index),
    ///     None => println!("no such topic"),
    /// }
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, ConsulError> {
        Ok(self.kv_get_indexed(key)?.value)
    }

    /// The entry at `key` with the `X-Consul-Index` it was read at.
    ///
    /// # Errors
    /// As [`Self::kv_get`].
    pub fn kv_get_indexed(&self, key: &str) -> Result<Indexed<Option<KvEntry>>, ConsulError> {
        self.kv_get_at(key, None)
    }

    pub(crate) fn kv_get_at(
        &self,
        key: &str,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Option<KvEntry>>, ConsulError> {
        let reply = self.execute(Call::new("GET", kv_path(key)).blocking(blocking))?;
        if reply.status == 404 {
            return Ok(Indexed { index: reply.required_index()?, value: None });
        }
        let reply = reply.success()?;
        let index = reply.required_index()?;
        let mut entries = decode_entries(&reply)?;
        let entry = match entries.len() {
            0 => None,
            1 => entries.pop(),
            count => return Err(reply.decode_error(format!("{count} entries for one key"))),
        };
        Ok(Indexed { index, value: entry })
    }

    /// Every entry whose key starts with `prefix`, sorted by key (empty when none).
    ///
    /// # Errors
    /// As [`Self::kv_get`].
    pub fn kv_get_recursive(&self, prefix: &str) -> Result<Indexed<Vec<KvEntry>>, ConsulError> {
        self.kv_get_recursive_at(prefix, None)
    }

    pub(crate) fn kv_get_recursive_at(
        &self,
        prefix: &str,
        blocking: Option<Blocking>,
    ) -> Result<Indexed<Vec<KvEntry>>, ConsulError> {
        let call = Call::new("GET", kv_path(prefix)).flag("recurse").blocking(blocking);
        let reply = self.execute(call)?;
        if reply.status == 404 {
            return Ok(Indexed { index: reply.required_index()?, value: Vec::new() });
        }
        let reply = reply.success()?;
        let mut entries = decode_entries(&reply)?;
        entries.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(Indexed { index: reply.required_index()?, value: entries })
    }

    /// The keys under `prefix`. With a `separator` (usually `"/"`), keys are cut after the first
    /// separator following the prefix and deduplicated, like a directory listing.
    ///
    /// # Errors
    /// As [`Self::kv_get`].
    ///
    /// ```no_run
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// // ["sluice/topics/", "sluice/spus/"] style listing:
    /// let children = client.kv_keys("sluice/", Some("/"))?;
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn kv_keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
    ) -> Result<Vec<String>, ConsulError> {
        let mut call = Call::new("GET", kv_path(prefix)).flag("keys");
        if let Some(separator) = separator {
            call = call.query("separator", separator);
        }
        let reply = self.execute(call)?;
        if reply.status == 404 {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = reply.success()?.json()?;
        keys.sort();
        Ok(keys)
    }

    /// Writes `value` at `key` unconditionally.
    ///
    /// # Errors
    /// [`ConsulError::ValueTooLarge`] (nothing sent), transport errors and error statuses.
    pub fn kv_put(&self, key: &str, value: &[u8]) -> Result<(), ConsulError> {
        if self.kv_put_with(key, value, &PutOptions::default())? {
            Ok(())
        } else {
            Err(ConsulError::Decode {
                method: "PUT",
                path: kv_path(key),
                detail: "an unconditional write answered false".into(),
            })
        }
    }

    /// Writes `value` at `key` with flags and an optional CAS index. Returns `false` when the
    /// CAS index did not match (nothing written).
    ///
    /// # Errors
    /// As [`Self::kv_put`].
    ///
    /// ```no_run
    /// use sluice_kvstore_consul::{ConsulIndex, PutOptions};
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// // Create only if absent.
    /// let created = client.kv_put_with(
    ///     "sluice/topics/orders",
    ///     b"{}",
    ///     &PutOptions { flags: 0, cas: Some(ConsulIndex::new(0)) },
    /// )?;
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn kv_put_with(
        &self,
        key: &str,
        value: &[u8],
        options: &PutOptions,
    ) -> Result<bool, ConsulError> {
        check_value_size(key, value)?;
        let mut call = Call::new("PUT", kv_path(key)).body(value);
        if options.flags != 0 {
            call = call.query("flags", options.flags.to_string());
        }
        if let Some(cas) = options.cas {
            call = call.query("cas", cas.get().to_string());
        }
        self.execute(call)?.success()?.bool_body()
    }

    /// Acquires the lock on `key` for `session`, writing `value`. Returns `false` when another
    /// session holds it or the lock delay of a lost holder has not passed.
    ///
    /// # Errors
    /// [`ConsulError::InvalidSession`] for a session that does not exist, plus those of
    /// [`Self::kv_put`].
    pub fn kv_acquire(
        &self,
        key: &str,
        value: &[u8],
        session: &SessionId,
    ) -> Result<bool, ConsulError> {
        check_value_size(key, value)?;
        let call = Call::new("PUT", kv_path(key)).query("acquire", session.as_str()).body(value);
        self.execute(call)?.success()?.bool_body()
    }

    /// Releases the lock `session` holds on `key` (the value is kept). Returns `false` when
    /// the session did not hold it.
    ///
    /// # Errors
    /// As [`Self::kv_acquire`].
    pub fn kv_release(&self, key: &str, session: &SessionId) -> Result<bool, ConsulError> {
        let call = Call::new("PUT", kv_path(key)).query("release", session.as_str());
        self.execute(call)?.success()?.bool_body()
    }

    /// Deletes `key` (succeeds when it does not exist).
    ///
    /// # Errors
    /// Transport errors and error statuses.
    pub fn kv_delete(&self, key: &str) -> Result<(), ConsulError> {
        self.execute(Call::new("DELETE", kv_path(key)))?.success()?;
        Ok(())
    }

    /// Deletes `key` only if its `ModifyIndex` equals `index`; returns whether it did.
    ///
    /// # Errors
    /// As [`Self::kv_delete`].
    pub fn kv_delete_cas(&self, key: &str, index: ConsulIndex) -> Result<bool, ConsulError> {
        let call = Call::new("DELETE", kv_path(key)).query("cas", index.get().to_string());
        self.execute(call)?.success()?.bool_body()
    }

    /// Deletes every key starting with `prefix`.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for an empty prefix (which would wipe the whole store), plus
    /// those of [`Self::kv_delete`].
    pub fn kv_delete_recursive(&self, prefix: &str) -> Result<(), ConsulError> {
        if prefix.is_empty() {
            return Err(ConsulError::Config {
                reason: "refusing a recursive delete of the whole KV store (empty prefix)".into(),
            });
        }
        self.execute(Call::new("DELETE", kv_path(prefix)).flag("recurse"))?.success()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_size_is_checked_at_the_limit() {
        assert!(check_value_size("k", &vec![0; VALUE_BYTES_MAX]).is_ok());
        let error = check_value_size("k", &vec![0; VALUE_BYTES_MAX + 1]).unwrap_err();
        assert!(error.to_string().contains("over Consul's limit of 524288 bytes"));
    }
}
