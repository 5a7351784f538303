//! Test support of the SC's process tests beside `sluice_testkit::process` (which starts the
//! SC): a minimal SPU speaking the control protocol ([`test_spu`]).

#![allow(dead_code)]

pub mod test_spu;
