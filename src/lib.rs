pub use teamkey_core::*;
