//! # jobstream
//!
//! The one `jobstream` binary: every process is a subcommand.
//!
//! ## Layout
//! - [`cli`]: the command line (clap), with every setting also read from the environment.
//! - [`cmd`]: one file per subcommand: `api`, `worker`, `projector`, `migrate`, `dev`, `token`, `bench`.
//! - [`system`]: connecting the pieces (broker, database, migrations) the same way for every command.

pub mod cli;
pub mod cmd;
pub mod system;
