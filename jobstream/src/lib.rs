//! # jobstream
//!
//! The one `jobstream` binary: every process is a subcommand.
//!
//! ## Layout
//! - [`cli`]: the command line (clap), by argument group, with every setting also read from
//!   the environment; each default is one const.
//! - [`cmd`]: one file per subcommand: `api`, `worker`, `projector`, `migrate`, `dev`, `token`, `bench`.
//! - [`system`]: connecting the pieces (broker, database, migrations, the API's state) the
//!   same way for every command.

pub mod cli;
pub mod cmd;
pub mod system;
