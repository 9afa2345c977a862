//! `keygen` and `genesis`: key files and genesis files.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use ledger::{Allocation, Genesis, Keypair, PublicKey, Validator};
use serde::{Deserialize, Serialize};

/// A key file: JSON with both halves in hex, readable by its owner only.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    public_key: PublicKey,
    secret_key: String,
}

/// Options of `keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key (created with permissions 0600).
    #[arg(long, short)]
    out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let key = Keypair::generate()
        .map_err(|error| anyhow::anyhow!("reading the system's randomness: {error}"))?;
    write_key(&args.out, &key, args.force)?;
    println!("{}", key.public().to_hex());
    Ok(())
}

/// Writes `key` to `path` with permissions 0600; refuses to replace a file unless `force`.
pub fn write_key(path: &Path, key: &Keypair, force: bool) -> anyhow::Result<()> {
    let file = KeyFile {
        public_key: key.public(),
        secret_key: ledger::hex(&key.secret()),
    };
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    match force {
        true => options.create(true).truncate(true),
        false => options.create_new(true),
    };
    let mut out = options.open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} exists: pass --force to replace it (its key is lost)",
            path.display()
        ),
        _ => anyhow::Error::new(error).context(format!("creating {}", path.display())),
    })?;
    // A replaced file keeps its old mode: narrow it too.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let text = serde_json::to_string_pretty(&file)?;
    writeln!(out, "{text}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads a key file; refuses one that others can read, and one whose halves do not match.
pub fn read_key(path: &Path) -> anyhow::Result<Keypair> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by others: run chmod 600 on it",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a key file", path.display()))?;
    let secret = ledger::from_hex::<32>(file.secret_key.trim())
        .with_context(|| format!("the secret key in {}", path.display()))?;
    let key = Keypair::from_secret(secret);
    if key.public() != file.public_key {
        bail!(
            "{}: the public key does not belong to the secret key",
            path.display()
        );
    }
    Ok(key)
}

/// Options of `genesis`.
#[derive(clap::Args)]
pub struct GenesisArgs {
    /// The chain's name: two chains with the same validators and balances differ by it.
    #[arg(long)]
    chain_id: String,
    /// A validator: its public key in hex, or a key file; `=WEIGHT` after it sets its voting
    /// weight (default 1). Repeat for each validator; their order is their index.
    #[arg(long = "validator", value_name = "KEY[=WEIGHT]", required = true)]
    validators: Vec<String>,
    /// An initial balance: `KEY=AMOUNT`, with KEY a public key in hex or a key file. Repeat.
    #[arg(long = "balance", value_name = "KEY=AMOUNT")]
    balances: Vec<String>,
    /// Where to write the genesis (JSON).
    #[arg(long, short)]
    out: PathBuf,
}

pub fn genesis(args: GenesisArgs) -> anyhow::Result<()> {
    let validators = args
        .validators
        .iter()
        .map(|spec| {
            let (key, weight) = match spec.rsplit_once('=') {
                Some((key, weight)) => (key, weight.parse().context("a validator's weight")?),
                None => (spec.as_str(), 1),
            };
            Ok(Validator {
                key: public_key(key)?,
                weight,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let balances = args
        .balances
        .iter()
        .map(|spec| {
            let (key, amount) = spec
                .rsplit_once('=')
                .with_context(|| format!("{spec:?}: expected KEY=AMOUNT"))?;
            Ok(Allocation {
                account: public_key(key)?,
                balance: amount.parse().context("a balance")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let genesis = Genesis {
        chain_id: args.chain_id,
        validators,
        balances,
    };
    genesis.check()?;
    let text = serde_json::to_string_pretty(&genesis)?;
    std::fs::write(&args.out, text + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", genesis.encode().1);
    Ok(())
}

/// A public key given in hex, or as the path of a key file.
fn public_key(text: &str) -> anyhow::Result<PublicKey> {
    if let Ok(key) = text.parse() {
        return Ok(key);
    }
    let path = Path::new(text);
    match path.exists() {
        true => Ok(read_key(path)?.public()),
        false => bail!("{text:?} is neither a public key (64 hex digits) nor a key file"),
    }
}

/// Reads and checks a genesis file.
pub fn read_genesis(path: &Path) -> anyhow::Result<Genesis> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let genesis: Genesis = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a genesis file", path.display()))?;
    genesis
        .check()
        .with_context(|| format!("{} is not a valid genesis", path.display()))?;
    Ok(genesis)
}
