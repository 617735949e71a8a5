//! A folder of credentials made by `baton auth init`: one nkey seed file per
//! identity (`broker.nk`, `agent.nk`, `client.nk`, `admin.nk`, `monitor.nk`,
//! `console.nk`, `subagent-<id>.nk`), `identities.toml` listing them with their public
//! keys, and `auth.conf`, the nats-server `authorization` block that gives
//! each identity its role's permissions ([`super::roles`]).
//!
//! Seeds are written with mode 0600 and never printed. Running `init` again
//! keeps every identity whose seed file holds its key, makes a new key for
//! one whose seed file is missing or holds no seed, and for one asked to be
//! rotated, refuses a seed file holding another key, and adds the
//! identities asked for.

use std::fs::OpenOptions;
use std::io::Write as _;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::roles::{permissions, Permissions, Role};
use crate::protocol::subjects::is_valid_token;

const IDENTITIES: &str = "identities.toml";
const SERVER_CONF: &str = "auth.conf";

/// One set of credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `broker`, `client`, ... or `subagent-<id>`; the seed file is `<name>.nk`.
    pub name: String,
    pub role: String,
    /// The subagent id this identity may act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub public_key: String,
}

impl Identity {
    pub fn role(&self) -> Option<Role> {
        Role::parse(&self.role)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentitiesFile {
    prefix: String,
    #[serde(default, rename = "identity")]
    identities: Vec<Identity>,
}

/// A credentials folder.
#[derive(Debug, Clone)]
pub struct AuthDir {
    dir: PathBuf,
    prefix: String,
    identities: Vec<Identity>,
}

/// What `init` did with one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    New,
    Kept,
    /// A new key replaced the old one, for this reason.
    Remade(String),
}

/// The identity name of a role (for a subagent, of one subagent id).
pub fn identity_name(role: Role, id: Option<&str>) -> String {
    match (role, id) {
        (Role::Subagent, Some(id)) => format!("subagent-{id}"),
        _ => role.as_str().to_string(),
    }
}

impl AuthDir {
    /// Creates `dir` with one identity per shared role and one per subagent
    /// id, or adds the missing ones to an existing folder; writes `auth.conf`.
    pub fn init(dir: &Path, prefix: &str, subagents: &[String]) -> anyhow::Result<AuthDir> {
        Ok(AuthDir::init_rotating(dir, prefix, subagents, &[])?.0)
    }

    /// [`AuthDir::init`], also giving the identities named in `rotate` new
    /// keys; says what it did with each identity.
    pub fn init_rotating(
        dir: &Path,
        prefix: &str,
        subagents: &[String],
        rotate: &[String],
    ) -> anyhow::Result<(AuthDir, Vec<(String, Made)>)> {
        // every id checked before anything is written
        if let Some(bad) = subagents.iter().find(|id| !is_valid_token(id)) {
            bail!("subagent id {bad:?}: use letters, digits, '-' and '_' only, at most 64");
        }
        let mut auth = if dir.join(IDENTITIES).exists() {
            let auth = AuthDir::open(dir)?;
            if auth.prefix != prefix {
                bail!(
                    "{} was made for prefix {:?}, not {prefix:?}: use another folder",
                    dir.display(),
                    auth.prefix
                );
            }
            auth
        } else {
            create_private_dir(dir)?;
            AuthDir {
                dir: dir.to_path_buf(),
                prefix: prefix.to_string(),
                identities: Vec::new(),
            }
        };
        let asked: Vec<String> = Role::ALL
            .into_iter()
            .filter(|r| *r != Role::Subagent)
            .map(|r| identity_name(r, None))
            .chain(
                subagents
                    .iter()
                    .map(|id| identity_name(Role::Subagent, Some(id))),
            )
            .chain(auth.identities.iter().map(|i| i.name.clone()))
            .collect();
        if let Some(unknown) = rotate.iter().find(|name| !asked.contains(name)) {
            bail!(
                "--rotate {unknown}: no such identity in {} (identities: {})",
                dir.display(),
                unique(&asked).join(", ")
            );
        }
        // every existing seed checked before anything is written
        let mut made = Vec::new();
        for identity in &auth.identities {
            let remake = match rotate.contains(&identity.name) {
                true => Some("rotated".to_string()),
                false => auth.seed_problem(identity)?,
            };
            made.push(match remake {
                Some(reason) => (identity.name.clone(), Made::Remade(reason)),
                None => (identity.name.clone(), Made::Kept),
            });
        }
        for (name, how) in &made {
            if let Made::Remade(_) = how {
                auth.new_key(name)?;
            }
        }
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Subagent) {
            if auth.ensure(role, None)? {
                made.push((identity_name(role, None), Made::New));
            }
        }
        for id in subagents {
            if auth.ensure(Role::Subagent, Some(id))? {
                made.push((identity_name(Role::Subagent, Some(id)), Made::New));
            }
        }
        auth.save()?;
        auth.make_private()?;
        Ok((auth, made))
    }

    /// Why an identity's seed file cannot stay: missing or no seed (a new key
    /// is made); an error when it holds another key (a seed someone may rely
    /// on is not overwritten unasked).
    fn seed_problem(&self, identity: &Identity) -> anyhow::Result<Option<String>> {
        let path = self.dir.join(format!("{}.nk", identity.name));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some("seed file was missing".into()))
            }
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let Ok(key) = nkeys::KeyPair::from_seed(text.trim()) else {
            return Ok(Some("seed file held no nkey seed".into()));
        };
        if key.public_key() != identity.public_key {
            bail!(
                "{} holds the key {}, but {IDENTITIES} names {} for {:?}: \
                 to give {:?} a new key, run again with --rotate {}; to keep the file's \
                 key, put the matching seed back",
                path.display(),
                key.public_key(),
                identity.public_key,
                identity.name,
                identity.name,
                identity.name
            );
        }
        Ok(None)
    }

    /// Replaces an identity's key with a new one (its seed file too).
    fn new_key(&mut self, name: &str) -> anyhow::Result<()> {
        let key = nkeys::KeyPair::new_user();
        let seed = key.seed().context("cannot encode a new nkey seed")?;
        write_private(&self.dir.join(format!("{name}.nk")), &format!("{seed}\n"))?;
        if let Some(identity) = self.identities.iter_mut().find(|i| i.name == name) {
            identity.public_key = key.public_key();
        }
        Ok(())
    }

    /// Reads a folder made by [`AuthDir::init`].
    pub fn open(dir: &Path) -> anyhow::Result<AuthDir> {
        let path = dir.join(IDENTITIES);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (make the folder with `baton auth init {}`)",
                path.display(),
                dir.display()
            )
        })?;
        let file: IdentitiesFile =
            toml::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
        Ok(AuthDir {
            dir: dir.to_path_buf(),
            prefix: file.prefix,
            identities: file.identities,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    /// The folder readable by its owner only, and every seed too (a folder
    /// made earlier, or loosened since, is tightened).
    fn make_private(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let private = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot restrict {}", path.display()))
        };
        private(&self.dir, 0o700)?;
        for identity in &self.identities {
            let seed = self.dir.join(format!("{}.nk", identity.name));
            if seed.exists() {
                private(&seed, 0o600)?;
            }
        }
        Ok(())
    }

    /// The nats-server configuration file to include.
    pub fn server_conf_path(&self) -> PathBuf {
        self.dir.join(SERVER_CONF)
    }

    /// The seed file of `role` (of subagent `id`).
    pub fn seed_path(&self, role: Role, id: Option<&str>) -> PathBuf {
        self.dir.join(format!("{}.nk", identity_name(role, id)))
    }

    /// Adds a subagent identity when it is missing and rewrites the files;
    /// true when it was added (the server must then reload its config).
    pub fn add_subagent(&mut self, id: &str) -> anyhow::Result<bool> {
        let added = self.ensure(Role::Subagent, Some(id))?;
        if added {
            self.save()?;
        }
        Ok(added)
    }

    /// The `authorization` block for nats-server.
    pub fn server_conf(&self) -> String {
        render_server_conf(&self.prefix, &self.identities)
    }

    fn ensure(&mut self, role: Role, id: Option<&str>) -> anyhow::Result<bool> {
        if let Some(id) = id {
            if !is_valid_token(id) {
                bail!("subagent id {id:?}: use letters, digits, '-' and '_' only, at most 64");
            }
        }
        let name = identity_name(role, id);
        if self.identities.iter().any(|i| i.name == name) {
            return Ok(false);
        }
        let key = nkeys::KeyPair::new_user();
        let seed = key.seed().context("cannot encode a new nkey seed")?;
        write_private(&self.dir.join(format!("{name}.nk")), &format!("{seed}\n"))?;
        self.identities.push(Identity {
            name,
            role: role.as_str().to_string(),
            id: id.map(str::to_string),
            public_key: key.public_key(),
        });
        Ok(true)
    }

    fn save(&self) -> anyhow::Result<()> {
        let file = IdentitiesFile {
            prefix: self.prefix.clone(),
            identities: self.identities.clone(),
        };
        let text = format!(
            "# Made by `baton auth init`: the identities in this folder (seeds: <name>.nk).\n{}",
            toml::to_string(&file).context("cannot encode identities")?
        );
        write_private(&self.dir.join(IDENTITIES), &text)?;
        write_private(&self.server_conf_path(), &self.server_conf())
    }
}

/// The nats-server `authorization` block giving every identity its role's
/// permissions (pure).
pub fn render_server_conf(prefix: &str, identities: &[Identity]) -> String {
    let mut out = format!(
        "# Made by `baton auth init` for the subject prefix {prefix:?}: every Baton\n\
         # identity with its role's permissions. Include it in the nats-server\n\
         # configuration (`include \"auth.conf\"`) and reload the server after\n\
         # adding identities (`nats-server --signal reload`).\n\
         authorization {{\n  users = [\n"
    );
    for identity in identities {
        let Some(role) = identity.role() else {
            continue;
        };
        let p = permissions(role, prefix, identity.id.as_deref(), &identity.public_key);
        out.push_str(&format!("    # {} ({})\n", identity.name, role.purpose()));
        out.push_str(&format!(
            "    {{ nkey: {:?}, permissions: {} }}\n",
            identity.public_key,
            render_permissions(&p)
        ));
    }
    out.push_str("  ]\n}\n");
    out
}

fn render_permissions(p: &Permissions) -> String {
    let list = |subjects: &[String]| {
        let quoted: Vec<String> = subjects.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let deny = match p.deny_publish.as_slice() {
        [] => String::new(),
        subjects => format!(", deny: {}", list(subjects)),
    };
    format!(
        "{{ publish: {{ allow: {}{deny} }}, subscribe: {{ allow: {} }}, allow_responses: {} }}",
        list(&p.publish),
        list(&p.subscribe),
        p.allow_responses
    )
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `text` to `path` readable by the owner only (replacing it whole).
/// `names` without repeats, in their order (pure).
fn unique(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_one_identity_per_role_and_subagent_and_keeps_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        let auth = AuthDir::init(&dir, "baton", &["sub-1".into()]).unwrap();
        let names: Vec<&str> = auth.identities().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "broker",
                "agent",
                "client",
                "admin",
                "monitor",
                "console",
                "publisher",
                "subagent-sub-1"
            ]
        );
        let seed = std::fs::read_to_string(auth.seed_path(Role::Subagent, Some("sub-1"))).unwrap();
        let key = nkeys::KeyPair::from_seed(seed.trim()).unwrap();
        assert_eq!(key.public_key(), auth.identities()[7].public_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(auth.seed_path(Role::Broker, None))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "seeds are private");
        }

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let seed = auth.seed_path(Role::Client, None);
            std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            AuthDir::init(&dir, "baton", &[]).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!((mode(&seed), mode(&dir)), (0o600, 0o700), "tightened again");
        }
        let before = std::fs::read_dir(&dir).unwrap().count();
        assert!(AuthDir::init(&dir, "baton", &["ok".into(), "a.b".into()]).is_err());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            before,
            "nothing written"
        );
        let again = AuthDir::init(&dir, "baton", &["sub-2".into()]).unwrap();
        assert_eq!(again.identities()[..8], auth.identities()[..8], "kept");
        assert_eq!(again.identities()[8].name, "subagent-sub-2");
        let mut opened = AuthDir::open(&dir).unwrap();
        assert_eq!(opened.identities(), again.identities());
        assert!(!opened.add_subagent("sub-2").unwrap());
        assert!(opened.add_subagent("sub-3").unwrap());
        assert!(
            AuthDir::init(&dir, "other", &[]).is_err(),
            "one prefix per folder"
        );
        assert!(AuthDir::init(&dir, "baton", &["a.b".into()]).is_err());
    }

    #[test]
    fn a_missing_or_broken_seed_gets_a_new_key_and_rotate_replaces_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("auth");
        let first = AuthDir::init(&dir, "baton", &["s1".into()]).unwrap();
        let key = |auth: &AuthDir, name: &str| {
            let i = auth.identities().iter().find(|i| i.name == name).unwrap();
            i.public_key.clone()
        };
        let seed_key = |name: &str| {
            let seed = std::fs::read_to_string(dir.join(format!("{name}.nk"))).unwrap();
            nkeys::KeyPair::from_seed(seed.trim()).unwrap().public_key()
        };
        std::fs::remove_file(dir.join("admin.nk")).unwrap();
        std::fs::write(dir.join("client.nk"), "banana\n").unwrap();
        let (again, made) = AuthDir::init_rotating(&dir, "baton", &[], &[]).unwrap();
        let how = |made: &[(String, Made)], name: &str| {
            made.iter().find(|(n, _)| n == name).unwrap().1.clone()
        };
        assert_eq!(
            how(&made, "admin"),
            Made::Remade("seed file was missing".into())
        );
        assert_eq!(
            how(&made, "client"),
            Made::Remade("seed file held no nkey seed".into())
        );
        assert_eq!(how(&made, "broker"), Made::Kept);
        for name in ["admin", "client"] {
            assert_ne!(key(&again, name), key(&first, name), "{name}: a new key");
            assert_eq!(
                seed_key(name),
                key(&again, name),
                "{name}: seed and list agree"
            );
            assert!(
                !again.server_conf().contains(&key(&first, name)),
                "{name}: the old key is no longer allowed in"
            );
        }
        assert_eq!(key(&again, "broker"), key(&first, "broker"));

        let (rotated, made) =
            AuthDir::init_rotating(&dir, "baton", &[], &["subagent-s1".into()]).unwrap();
        assert_eq!(how(&made, "subagent-s1"), Made::Remade("rotated".into()));
        assert_ne!(key(&rotated, "subagent-s1"), key(&again, "subagent-s1"));
        assert_eq!(seed_key("subagent-s1"), key(&rotated, "subagent-s1"));
        assert_eq!(how(&made, "admin"), Made::Kept);

        let err = AuthDir::init_rotating(&dir, "baton", &[], &["nobody".into()]).unwrap_err();
        assert!(err.to_string().contains("subagent-s1"), "{err}");

        // a seed holding another identity's key is not overwritten unasked
        let admin_seed = std::fs::read_to_string(dir.join("admin.nk")).unwrap();
        std::fs::write(dir.join("monitor.nk"), &admin_seed).unwrap();
        let err = AuthDir::init(&dir, "baton", &[]).unwrap_err();
        assert!(err.to_string().contains("--rotate monitor"), "{err}");
        let (_, made) = AuthDir::init_rotating(&dir, "baton", &[], &["monitor".into()]).unwrap();
        assert_eq!(how(&made, "monitor"), Made::Remade("rotated".into()));
        assert_ne!(seed_key("monitor"), seed_key("admin"));
    }

    #[test]
    fn the_server_conf_names_every_key_with_its_permissions() {
        let identities = vec![
            Identity {
                name: "broker".into(),
                role: "broker".into(),
                id: None,
                public_key: "UBROKER".into(),
            },
            Identity {
                name: "subagent-s1".into(),
                role: "subagent".into(),
                id: Some("s1".into()),
                public_key: "USUB".into(),
            },
        ];
        let conf = render_server_conf("baton", &identities);
        assert!(conf.contains("nkey: \"UBROKER\""), "{conf}");
        assert!(conf.contains("\"baton.subagent.s1.>\""), "{conf}");
        assert!(conf.contains("\"_INBOX.USUB.>\""), "{conf}");
        assert!(conf.contains("\"$KV.baton_leader.>\""), "{conf}");
        assert_eq!(conf.matches("nkey:").count(), 2);
    }
}
