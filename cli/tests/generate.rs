//! `hlfs generate-man` writes a man page for every command the tools'
//! `--help` lists, and `hlfs completions` prints scripts that bash (and zsh,
//! where installed) load. The list of commands comes from `--help`, not from
//! the generator, so a subcommand the generator missed fails here.

use std::path::Path;
use std::process::Command;

const HLFS: &str = env!("CARGO_BIN_EXE_hlfs");

fn out(bin: &str, args: &[&str]) -> String {
    let o = Command::new(bin).args(args).output().expect("binary runs");
    assert!(o.status.success(), "{bin} {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The subcommands `hlfs PATH… --help` lists under "Commands:", except help.
fn subcommands(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = out(HLFS, &args);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Man page names (without .1) for hlfs and all its subcommands, at any depth.
fn man_names(path: &mut Vec<String>, names: &mut Vec<String>) {
    names.push(std::iter::once("hlfs".to_owned()).chain(path.iter().cloned()).collect::<Vec<_>>().join("-"));
    for sub in subcommands(path) {
        path.push(sub);
        man_names(path, names);
        path.pop();
    }
}

#[test]
fn every_command_has_a_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let said = out(HLFS, &["generate-man", dir.path().to_str().unwrap()]);
    let mut want = Vec::new();
    man_names(&mut Vec::new(), &mut want);
    assert!(want.len() >= 25, "too few commands found in --help: {want:?}");
    assert!(want.contains(&"hlfs-snapshot-create".to_owned()), "{want:?}");
    want.push("snapshot.hlfs".into());
    want.push("clone.hlfs".into());
    for name in &want {
        let page = dir.path().join(format!("{name}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("no man page {}: {e}", page.display()));
        assert!(text.contains(".TH") && text.contains(".SH NAME"), "{} is no man page:\n{text}", page.display());
    }
    let count = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(count, want.len(), "pages beyond the visible commands (hidden ones?): {said}");
    assert!(said.contains(&format!("wrote {count} man pages")), "{said}");
    // The seed tools' pages describe their own flags, and hidden commands get none.
    let clone = std::fs::read_to_string(dir.path().join("clone.hlfs.1")).unwrap();
    assert!(clone.contains("father"), "{clone}");
    assert!(!Path::new(&dir.path().join("hlfs-generate-man.1")).exists());
    let gc = std::fs::read_to_string(dir.path().join("hlfs-gc.1")).unwrap();
    assert!(gc.contains("max\\-utilization"), "hlfs-gc.1 lacks its options:\n{gc}");
}

#[test]
fn generate_man_into_an_unwritable_place_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let o = Command::new(HLFS).args(["generate-man", file.to_str().unwrap()]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot write man pages into") && err.contains(file.to_str().unwrap()), "{err}");
}

#[test]
fn bash_loads_the_completions() {
    let dir = tempfile::tempdir().unwrap();
    for prog in ["hlfs", "snapshot.hlfs", "clone.hlfs"] {
        let script = dir.path().join(prog);
        std::fs::write(&script, out(HLFS, &["completions", "bash", "--program", prog])).unwrap();
        // Loads, registers a completion for PROG, and completes.
        let words = if prog == "hlfs" { "hlfs snap" } else { "PROG --" };
        let words = words.replace("PROG", prog);
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                r#"set -e; source "$1"; complete -p {prog}
                COMP_WORDS=({words}); COMP_CWORD=1; COMP_LINE="{words}"; COMP_POINT=${{#COMP_LINE}}
                f=$(complete -p {prog} | sed -E 's/.*-F ([^ ]+).*/\1/')
                "$f" {prog} "${{COMP_WORDS[1]}}" {prog}; echo "${{COMPREPLY[*]}}""#
            ))
            .arg("bash")
            .arg(&script)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "bash could not load {prog}'s completion: {}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.starts_with("complete ") && stdout.contains(&format!(" {prog}\n")), "{stdout}");
        let reply = stdout.lines().last().unwrap_or("");
        if prog == "hlfs" {
            assert_eq!(reply, "snapshot", "hlfs snap<TAB>");
        } else {
            let flag = if prog == "clone.hlfs" { "--father" } else { "--uri" };
            assert!(reply.split(' ').any(|w| w == flag), "{prog} --<TAB> gave '{reply}'");
        }
    }
}

#[test]
fn zsh_loads_the_completion() {
    if Command::new("zsh").arg("-fc").arg("true").output().is_err() {
        eprintln!("zsh not installed: only the script's header is checked");
        let s = out(HLFS, &["completions", "zsh"]);
        assert!(s.starts_with("#compdef hlfs"), "{s}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("_hlfs"), out(HLFS, &["completions", "zsh"])).unwrap();
    let o = Command::new("zsh")
        .arg("-fc")
        .arg(r#"fpath=("$1" $fpath); autoload -Uz compinit; compinit -u -d "$1/.zcompdump"; print -r -- $_comps[hlfs]"#)
        .arg("zsh")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "_hlfs", "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn completions_rejects_an_unknown_shell_or_program() {
    let o = Command::new(HLFS).args(["completions", "tcsh"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("possible values"), "{o:?}");
    let o = Command::new(HLFS).args(["completions", "bash", "--program", "qemu-img"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("snapshot.hlfs"), "{o:?}");
}
