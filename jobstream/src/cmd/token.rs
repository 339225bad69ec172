//! `jobstream token --sub alice [--admin]`: a development token.

use crate::cli::TokenArgs;
use crate::system;

/// Prints a token signed with the HS256 secret.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let auth = system::auth_config(&args.auth)?;
    anyhow::ensure!(!args.sub.trim().is_empty(), "--sub must not be empty");
    println!(
        "{}",
        jobstream_api::auth::mint_hs256(&auth, &args.sub, args.admin, args.ttl)?
    );
    Ok(())
}
