//! SPU group objects: a template from which the SC generates managed SPUs with consecutive ids
//! `first_id .. first_id + replicas`.

use serde::{Deserialize, Serialize};

use crate::ids::SpuId;
use crate::object::topic::ConfigError;

/// Largest number of SPUs one group may generate; bounds the SC's work per group.
pub const SPU_GROUP_REPLICAS_MAX: u16 = 1024;

/// Storage of the group's SPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    /// Data directory; the SPU default when absent.
    pub log_dir: Option<String>,
    /// Disk space reserved per SPU, in bytes; unlimited when absent.
    pub size_bytes: Option<u64>,
}

/// Desired state of an SPU group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuGroupSpec {
    /// Number of SPUs to generate, 1 to [`SPU_GROUP_REPLICAS_MAX`].
    pub replicas: u16,
    /// Id of the first generated SPU; the others follow consecutively.
    pub first_id: SpuId,
    /// Rack of every generated SPU.
    pub rack: Option<String>,
    /// Storage of every generated SPU.
    pub storage: StorageConfig,
}

impl SpuGroupSpec {
    /// The ids this group generates.
    pub fn spu_ids(&self) -> impl Iterator<Item = SpuId> + '_ {
        (0..i32::from(self.replicas)).map(move |index| SpuId(self.first_id.0 + index))
    }

    /// Checks the settings.
    ///
    /// ```
    /// use sluice_proto::object::SpuGroupSpec;
    /// let spec = SpuGroupSpec { replicas: 0, ..Default::default() };
    /// assert!(spec.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replicas == 0 || self.replicas > SPU_GROUP_REPLICAS_MAX {
            return Err(ConfigError::OutOfRange {
                setting: "replicas",
                value: i64::from(self.replicas),
                min: 1,
                max: i64::from(SPU_GROUP_REPLICAS_MAX),
            });
        }
        let last = i64::from(self.first_id.0) + i64::from(self.replicas) - 1;
        if self.first_id.0 < 0 || last > i64::from(i32::MAX) {
            return Err(ConfigError::OutOfRange {
                setting: "first_id",
                value: i64::from(self.first_id.0),
                min: 0,
                max: i64::from(i32::MAX) - i64::from(self.replicas) + 1,
            });
        }
        Ok(())
    }
}

/// Whether the group's SPUs could be generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpuGroupResolution {
    /// Not processed yet.
    #[default]
    Init,
    /// Its id range collides with existing SPUs, or a setting is invalid.
    Invalid,
    /// Its SPUs were generated.
    Reserved,
}

/// Observed state of an SPU group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpuGroupStatus {
    /// Init, invalid or reserved.
    pub resolution: SpuGroupResolution,
    /// Why it is invalid, for the operator.
    pub reason: Option<String>,
    /// The SPUs generated for it.
    pub resolved_spus: Vec<SpuId>,
}
