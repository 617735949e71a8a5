//! `baton auth`: credentials for every role, and the nats-server
//! configuration that enforces what each may do.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::auth::{identity_name, permissions, AuthDir, Made, Role};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Make (or extend) a credentials folder: an nkey seed per role and per
    /// subagent, and auth.conf, the nats-server authorization enforcing the roles
    ///
    /// Run it again with more --subagent ids to add them; existing seeds are
    /// kept. A seed file that is missing or holds no seed gets a new key.
    /// To replace a key (a seed leaked, a person left): --rotate NAME.
    /// After any new key: copy auth.conf to nats-server and reload it
    /// (nats-server --signal reload; the old key is refused from then on),
    /// copy identities.toml beside every seed, and restart the process that
    /// uses the identity with its new seed.
    Init(InitArgs),
    /// Print what each role may publish and subscribe to under the prefix
    Roles,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to write (mode 0700, seeds 0600; an existing folder is made private again)
    pub dir: PathBuf,
    /// A subagent id to make an identity for (each subagent has its own, so
    /// one subagent's credentials cannot take another's tasks); repeat
    #[arg(long = "subagent", value_name = "ID")]
    pub subagents: Vec<String>,
    /// Give this identity a new key (broker, agent, client, admin, monitor,
    /// console, publisher or subagent-ID); the old seed stops working once
    /// nats-server reloads auth.conf; repeat
    #[arg(long = "rotate", value_name = "NAME")]
    pub rotate: Vec<String>,
}

pub fn run(config: &Config, command: AuthCommand) -> anyhow::Result<()> {
    match command {
        AuthCommand::Init(args) => init(config, args),
        AuthCommand::Roles => {
            print!("{}", roles_table(&config.prefix));
            Ok(())
        }
    }
}

fn init(config: &Config, args: InitArgs) -> anyhow::Result<()> {
    let (auth, made) =
        AuthDir::init_rotating(&args.dir, &config.prefix, &args.subagents, &args.rotate)?;
    let dir = std::fs::canonicalize(auth.dir())?.display().to_string();
    println!(
        "{dir}: credentials for the subject prefix {:?}",
        auth.prefix()
    );
    println!(
        "{:<24} {:<9} {:<28} {:<7} may",
        "identity", "role", "seed file", ""
    );
    for identity in auth.identities() {
        let Some(role) = identity.role() else {
            continue;
        };
        let seed = auth.seed_path(role, identity.id.as_deref());
        let file = seed.file_name().map(|f| f.to_string_lossy().to_string());
        let new = match made.iter().find(|(name, _)| *name == identity.name) {
            Some((_, Made::Kept)) => "kept",
            Some((_, Made::Remade(_))) => "NEW KEY",
            _ => "new",
        };
        println!(
            "{:<24} {:<9} {:<28} {:<7} {}",
            identity.name,
            role.as_str(),
            file.unwrap_or_default(),
            new,
            role.purpose()
        );
    }
    for (name, how) in &made {
        if let Made::Remade(why) = how {
            println!(
                "\n{name}: {why}, so it has a new key in {name}.nk; its old seed stops working \
                 once nats-server reloads auth.conf: hand the new seed to whatever used it"
            );
        }
    }
    let sub = identity_name(Role::Subagent, Some("ID"));
    println!(
        "\nNext:\n  \
         1. nats-server: copy {dir}/auth.conf beside its configuration file and add\n     \
         include \"auth.conf\"   (again after every change, then: nats-server --signal reload)\n  \
         2. copy identities.toml (public keys only) beside every seed you hand out:\n     \
         Baton's processes check who signed each command against it\n  \
         3. start each process with its own seed:\n     \
         baton broker --nats-nkey {dir}/broker.nk\n     \
         baton agent --nats-nkey {dir}/agent.nk\n     \
         baton subagent --id ID --nats-nkey {dir}/{sub}.nk\n     \
         baton console --nats-nkey {dir}/console.nk   (the web console)\n  \
         4. people and programs: --nats-nkey {dir}/client.nk (submit, orders, watch),\n     \
         admin.nk (also deploy and switch-over), monitor.nk (read only); or\n     \
         export BATON_NATS__NKEY={dir}/admin.nk\n\
         Keep the .nk files secret: each one is an identity."
    );
    Ok(())
}

/// The roles and their permissions as a Markdown table (pure).
pub fn roles_table(prefix: &str) -> String {
    let mut out = String::from("| role | may publish | may subscribe |\n|---|---|---|\n");
    for role in Role::ALL {
        let id = (role == Role::Subagent).then_some("{id}");
        let p = permissions(role, prefix, id, "{public key}");
        let code = |subjects: &[String]| {
            let listed: Vec<String> = subjects.iter().map(|s| format!("`{s}`")).collect();
            listed.join(", ")
        };
        let mut publish = code(&p.publish);
        if !p.deny_publish.is_empty() {
            publish = format!("{publish}, except {}", code(&p.deny_publish));
        }
        out.push_str(&format!(
            "| `{role}` | {publish} | {} |\n",
            code(&p.subscribe)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_table_has_a_row_per_role() {
        let table = roles_table("baton");
        assert_eq!(table.lines().count(), 2 + Role::ALL.len());
        assert!(table.contains("`baton.subagent.{id}.>`"), "{table}");
        assert!(table.contains("`_INBOX.{public key}.>`"), "{table}");
    }
}
