//! `config-server token create|list|revoke`: per-device tokens, kept in the
//! server's database as SHA-256 hashes. A running server sees a change at its next
//! request (it reads the table per request), so no restart is needed.

use std::process::ExitCode;

use crate::cli::TokenCommand;
use crate::config_server::db::Db;

/// Runs one token command; prints the token (create), the list, or why not.
pub fn run(command: TokenCommand) -> ExitCode {
    let (TokenCommand::Create { db, .. }
    | TokenCommand::List { db }
    | TokenCommand::Revoke { db, .. }) = &command;
    let store = match Db::open(db) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", db.display());
            return ExitCode::from(1);
        }
    };
    let result = match &command {
        TokenCommand::Create { device_id, .. } => create(&store, device_id),
        TokenCommand::List { .. } => list(&store),
        TokenCommand::Revoke { device_id, .. } => revoke(&store, device_id),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

fn create(store: &Db, device_id: &str) -> Result<(), String> {
    if !crate::sync::is_device_id(device_id) {
        return Err(format!(
            "{device_id:?} is not a device id (letters, digits, '.', '_', '-'; 1 to 128 characters)"
        ));
    }
    let token = store
        .create_token(device_id, false)
        .map_err(|e| e.to_string())?
        .ok_or("the token was not stored")?;
    // The token alone on stdout, so `TOKEN=$(… token create ID)` works.
    println!("{token}");
    Ok(())
}

fn list(store: &Db) -> Result<(), String> {
    let tokens = store.tokens().map_err(|e| e.to_string())?;
    if tokens.is_empty() {
        eprintln!("no device tokens");
    }
    for (device, created) in tokens {
        // Device ids come from the devices: escaped for the terminal.
        println!(
            "{}\t{}",
            crate::escape::Escaped(&device),
            crate::clock::rfc3339(created)
        );
    }
    Ok(())
}

fn revoke(store: &Db, device_id: &str) -> Result<(), String> {
    if store.revoke_token(device_id).map_err(|e| e.to_string())? {
        eprintln!("revoked the token of {device_id}");
        Ok(())
    } else {
        Err(format!("{device_id} has no token"))
    }
}
