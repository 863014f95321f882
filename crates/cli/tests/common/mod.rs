//! Running the real `vellum` binary (and the independent age implementation) in tests.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]

pub(crate) mod gateway;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The outcome of one run.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

fn finish(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn run_with_stdin(mut command: Command, stdin: &[u8]) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    finish(output)
}

/// Runs `vellum ARGS` in `dir` with `stdin`.
pub(crate) fn vellum(dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vellum"));
    command.args(args).current_dir(dir);
    run_with_stdin(command, stdin)
}

/// The folder of the independent age implementation (TypeScript, npm `age-encryption`).
pub(crate) fn interop_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    assert!(
        dir.join("node_modules/age-encryption").is_dir(),
        "the independent age implementation is not installed: run `npm ci --prefix tests/interop` (scripts/test does)"
    );
    dir
}

/// Runs `node age.mjs ARGS` in `dir` with `stdin`.
pub(crate) fn ts_age(dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = Command::new("node");
    command
        .arg(interop_dir().join("age.mjs"))
        .args(args)
        .current_dir(dir);
    run_with_stdin(command, stdin)
}

/// The public key line of an identity file.
pub(crate) fn public_key_of(identity_file: &Path) -> String {
    let text = std::fs::read_to_string(identity_file).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("identity file names its public key")
        .to_owned()
}

/// Starts `vellum bench storage` with `args`, appending one line per acknowledged
/// append to `receipts`, and returns once it has started timing (its records are
/// prepared).
pub(crate) fn start_bench(args: &[&str], dir: &Path, receipts: &Path) -> std::process::Child {
    use std::io::BufRead as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["bench", "storage"])
        .args(args)
        .arg("--dir")
        .arg(dir)
        .arg("--receipts")
        .arg(receipts)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("timing") {
            break;
        }
    }
    child
}

/// Every acknowledged append in a receipt log written by `vellum bench storage
/// --receipts`: the record id and the receipt text. A final partial line (the writer
/// was killed mid-line) is ignored.
pub(crate) fn acknowledged(receipts: &Path) -> Vec<(vellum_protocol::ids::RecordId, String)> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(receipts).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|line| {
            let (id, receipt) = line.trim_end().split_once(' ').unwrap();
            let receipt = base64::engine::general_purpose::STANDARD.decode(receipt).unwrap();
            (
                vellum_protocol::ids::RecordId::parse(id).unwrap(),
                String::from_utf8(receipt).unwrap(),
            )
        })
        .collect()
}

/// Panics with `why` unless the archive proves `newest` consistent with `old`.
pub(crate) async fn assert_extends<L, B>(
    archive: &vellum_archive::Archive<L, B>,
    old: &vellum_tlog::checkpoint::VerifiedCheckpoint,
    newest: &vellum_tlog::checkpoint::VerifiedCheckpoint,
    why: &str,
) where
    L: vellum_archive::ports::LogStore,
    B: vellum_archive::ports::BlobStore,
{
    let proof = vellum_tlog::proof::ConsistencyProof {
        old: old.size(),
        new: newest.size(),
        hashes: archive
            .consistency_proof(old.size(), newest.size())
            .await
            .unwrap(),
    };
    proof.verify(old, newest).expect(why);
}
