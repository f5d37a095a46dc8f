//! One module per command.

pub(crate) mod inspect;
pub(crate) mod peek;
pub(crate) mod redrive;
pub(crate) mod send;
pub(crate) mod stats;
