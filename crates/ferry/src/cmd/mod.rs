//! One module per subcommand that has subcommands of its own.

pub(crate) mod log;
pub(crate) mod quarantine;
