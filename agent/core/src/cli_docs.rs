//! Shell completions and man pages of the two binaries, generated from their clap definitions
//! so they cannot drift from `--help` (feature `cli-docs`).
//!
//! `agentctl completions bash` and `guestward-agent completions bash` print one script;
//! packaging runs the hidden `generate-docs --dir DIR` of each binary, which writes the files
//! where a package installs them, relative to `DIR`:
//!
//! | file | installed as |
//! |---|---|
//! | `man8/<bin>.8`, `man8/<bin>-<command>.8` | `/usr/share/man/man8/` |
//! | `bash-completion/completions/<bin>` | `/usr/share/bash-completion/completions/` |
//! | `zsh/vendor-completions/_<bin>` | `/usr/share/zsh/vendor-completions/` |
//! | `fish/vendor_completions.d/<bin>.fish` | `/usr/share/fish/vendor_completions.d/` |

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The man section of both binaries: system administration commands.
pub const MAN_SECTION: &str = "8";

/// Writes the completion script of `cmd` for `shell` to `out`.
pub fn write_completions(cmd: &mut clap::Command, shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    // Generated into memory first: clap_complete panics on a write error (a closed pipe,
    // `agentctl completions bash | head`), which must be an ordinary error instead.
    let name = cmd.get_name().to_string();
    let mut buffer = Vec::new();
    clap_complete::generate(shell, cmd, name, &mut buffer);
    out.write_all(&buffer)?;
    out.flush()
}

/// Writes every man page (the command, and one per visible subcommand, recursively, named
/// `<bin>-<command>.8`) and the bash, zsh and fish completions of `cmd` under `dir`, in the
/// layout of the module documentation. Returns the files written.
pub fn generate_to(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let name = cmd.get_name().to_string();
    let man_dir = dir.join(format!("man{MAN_SECTION}"));
    std::fs::create_dir_all(&man_dir)?;
    // `help` is clap's own subcommand: its page would say nothing the others do not.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, &man_dir, &mut written)?;
    for (shell, sub, file) in [
        (Shell::Bash, "bash-completion/completions", name.clone()),
        (Shell::Zsh, "zsh/vendor-completions", format!("_{name}")),
        (Shell::Fish, "fish/vendor_completions.d", format!("{name}.fish")),
    ] {
        let target = dir.join(sub);
        std::fs::create_dir_all(&target)?;
        let path = target.join(file);
        let mut file = std::fs::File::create(&path)?;
        write_completions(&mut cmd, shell, &mut file)?;
        written.push(path);
    }
    Ok(written)
}

fn man_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    // No date: the pages are reproducible from the same source.
    let man = clap_mangen::Man::new(cmd.clone()).section(MAN_SECTION).manual("guestward");
    written.push(man.generate_to(dir)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn demo() -> clap::Command {
        clap::Command::new("demo")
            .version("1.0")
            .about("A demo tool")
            .subcommand(clap::Command::new("status").about("Show the status"))
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn generates_a_page_per_visible_command_and_three_completion_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate_to(demo(), dir.path()).unwrap();
        let mut names: Vec<String> =
            written.iter().map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "bash-completion/completions/demo",
                "fish/vendor_completions.d/demo.fish",
                "man8/demo-status.8",
                "man8/demo.8",
                "zsh/vendor-completions/_demo",
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man8/demo.8")).unwrap();
        assert!(page.contains(".TH demo 8") && page.contains("A demo tool"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("bash-completion/completions/demo")).unwrap();
        assert!(bash.contains("complete -F _demo") && bash.contains("status"), "{bash}");
    }
}
