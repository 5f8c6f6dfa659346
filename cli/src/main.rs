//! `hlfs`: create, inspect, list, snapshot, clone, import, export and wipe HLFS volumes.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hlfs_cli::generate::Program;
use hlfs_cli::{ops, output::DU_JSON_HELP, output::INFO_JSON_HELP, output::LIST_JSON_HELP, Output};
use std::path::PathBuf;
use std::process::ExitCode;

const URI_HELP: &str = "Volume URIs look like local:///abs/dir/volume, hdfs://namenode:port/dir/volume \
or hdfs:///dir/volume (the default filesystem of $HADOOP_CONF_DIR), optionally prefixed with hlfs:; \
append %NAME to mean snapshot NAME, as in local:///tmp/testenv/testfs%snapshot1.";

#[derive(Parser)]
#[command(
    name = "hlfs",
    version,
    about = "Manage HLFS volumes: log-structured virtual disks with O(1) snapshots and clones",
    long_about = None,
    before_help = URI_HELP
)]
struct Cli {
    /// Log more to stderr: -v info, -vv debug (RUST_LOG overrides)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a volume (like qemu-img create), or with -b a clone of a snapshot
    #[command(after_help = "Examples:\n  hlfs create local:///tmp/testenv/testfs 10G\n  \
        hlfs create -b local:///tmp/testenv/testfs%snapshot1 local:///tmp/testenv/testfs2")]
    Create {
        /// Volume to create, e.g. local:///tmp/testenv/testfs
        uri: String,
        /// Virtual size with an optional suffix: 512, 64M, 10G, 1.5T (binary units).
        /// Required unless -b is given; with -b it defaults to the snapshot's size
        size: Option<String>,
        /// Make the new volume a clone of this snapshot (URI%SNAPSHOT)
        #[arg(short = 'b', long = "backing", value_name = "URI%SNAPSHOT")]
        backing: Option<String>,
    },
    /// Show a volume's size, space use, snapshots, base and lock holder
    #[command(after_long_help = INFO_JSON_HELP)]
    Info {
        /// Volume, or URI%SNAPSHOT to see a snapshot
        uri: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// List the volumes in a directory, with their sizes and the space left
    ///
    /// Sub-directories that are not volumes are skipped; a volume that cannot be opened is skipped with a
    /// warning on stderr. Nothing is locked, so volumes in use by a VM are listed too. Exits with 3 if the
    /// directory does not exist.
    ///
    /// Example: hlfs list --output json local:///var/lib/hlfs/vms
    #[command(after_long_help = LIST_JSON_HELP)]
    List {
        /// Directory holding volumes, e.g. local:///var/lib/hlfs/vms (no %snapshot)
        dir: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Create a directory for volumes, with its missing parents (as `virsh pool-build` does)
    ///
    /// An existing directory is fine. On HDFS this is the one way to make an empty directory without
    /// Hadoop's tools; a volume's own directory is made by `hlfs create`.
    ///
    /// Example: hlfs mkdir hdfs://namenode:8020/vms
    Mkdir {
        /// Directory, e.g. local:///var/lib/hlfs/vms or hdfs://namenode:8020/vms (no %snapshot)
        dir: String,
    },
    /// Remove an empty directory (as `virsh pool-delete` does)
    ///
    /// Exits with 3 if the directory does not exist and with 6 if it holds anything (volumes are
    /// deleted one by one with `hlfs delete`).
    Rmdir {
        /// Directory, e.g. hdfs://namenode:8020/vms (no %snapshot)
        dir: String,
    },
    /// Delete a volume and all its snapshots (refused while clones use it)
    Delete {
        /// Volume to delete
        uri: String,
    },
    /// Break the write lock of a volume whose writer is gone (e.g. its host crashed)
    #[command(after_help = "A lock left by a dead process on this host is taken over by the next opener \
        anyway; a lock held from another host (volumes on HDFS) is never presumed dead, since that host \
        cannot be checked from here. Make sure the writer named in the error is really gone (host down, \
        process killed) before breaking its lock: two writers would damage the volume. A writer alive on \
        this host is refused (exit 4).\n\
        Example: hlfs unlock hdfs://namenode:8020/vms/disk1")]
    Unlock {
        /// Volume whose lock to break
        uri: String,
    },
    /// Grow a volume to SIZE, or by +SIZE (volumes cannot shrink)
    Resize {
        /// Volume to grow
        uri: String,
        /// New size (10G), or +SIZE to grow by that much (+1G)
        #[arg(allow_hyphen_values = true)]
        size: String,
    },
    /// Create, list, delete or revert to snapshots
    #[command(subcommand)]
    Snapshot(SnapCmd),
    /// Make DST an O(1) copy-on-write clone of SRC%SNAPSHOT
    #[command(after_help = "DST may already exist if it was created and never written.\n\
        Example: hlfs clone local:///tmp/testenv/testfs%snapshot1 local:///tmp/testenv/testfs2")]
    Clone {
        /// Source snapshot, URI%SNAPSHOT
        src: String,
        /// Volume to create (or an existing, never-written one)
        dst: String,
        /// Size of the clone (default: the snapshot's size; may only be larger)
        #[arg(long)]
        size: Option<String>,
    },
    /// Copy a raw disk image into a volume (like qemu-img convert raw.img hlfs:URI)
    #[command(after_help = "If the volume does not exist it is created, with --size or the raw image's size \
        rounded up to 512 bytes (-n refuses instead). All-zero 4 KiB blocks are not stored where the volume \
        already reads zeros, so a fresh volume holds only the image's data. A progress bar is shown when \
        stderr is a terminal.\n\n\
        RAW may be - to read the image from stdin: what arrives is written from offset 0. Its size is not \
        known in advance, so creating a volume needs --size; an image longer than the volume fails (exit 2) \
        after its first SIZE bytes were written.\n\
        Example: xz -dc disk.raw.xz | hlfs import - local:///tmp/testenv/testfs --size 10G")]
    Import {
        /// Raw image file (or block device) to read, or - for stdin
        raw: PathBuf,
        /// Volume to write; must not name a snapshot
        uri: String,
        /// Fail instead of creating a missing volume (like qemu-img convert -n)
        #[arg(short = 'n', long)]
        no_create: bool,
        /// Size of the volume if import creates it (required when RAW is - and the volume is new)
        #[arg(long)]
        size: Option<String>,
    },
    /// Write a volume, or URI%SNAPSHOT, to a raw image file
    #[command(after_help = "The file is created or truncated and sized to the volume; blocks that read as \
        zeros are left as holes, so the file is sparse. A block device is written in full. A progress bar is \
        shown when stderr is a terminal.\n\n\
        RAW may be - to write the image to stdout, every byte of it (zeros included); stdout then carries \
        nothing else.\n\
        Example: hlfs export local:///tmp/testenv/testfs%snapshot1 - | xz > snap.raw.xz")]
    Export {
        /// Volume or URI%SNAPSHOT to read
        uri: String,
        /// Raw image file to write, or - for stdout
        raw: PathBuf,
    },
    /// Make a range of a volume (default: all of it) read as zeros, without writing data
    #[command(after_help = "The range becomes one zero record in the log, so wiping is fast whatever its \
        size, and the blocks it covered are freed (snapshots keep theirs). OFFSET and LENGTH take the same \
        suffixes as sizes (64K, 1M) and must be multiples of 512 and stay within the volume (exit 2 \
        otherwise). The volume is flushed before the command returns.\n\
        Example: hlfs wipe local:///tmp/testenv/testfs --offset 1M --length 4M")]
    Wipe {
        /// Volume to wipe; must not name a snapshot
        uri: String,
        /// Start of the range, bytes (default 0)
        #[arg(long, value_name = "OFFSET")]
        offset: Option<String>,
        /// Length of the range, bytes (default: to the end of the volume)
        #[arg(long, value_name = "LENGTH")]
        length: Option<String>,
    },
    /// Reclaim the space of overwritten and deleted blocks (segment cleaning)
    #[command(after_help = "Copies the live blocks of mostly-dead segments to the end of the log and \
        retires those segments; blocks the head, a snapshot or a clone's base still reads are never \
        dropped. Segments are ranked by (1-u)*age/(1+u), u being their live fraction, and only those \
        with u <= --max-utilization are cleaned. A retired segment is deleted at once unless a \
        read-only opener (a snapshot or head view, a clone reading its base, qemu-img) registered \
        before the pass may still read it: then it goes when that reader closes, or, for a snapshot \
        view, once the reader has loaded a new map (within its heartbeat, 30 s). The report says \
        what was freed now and what is held back, by which reader. Retired segments no reader \
        record accounts for (an interrupted pass) wait --grace seconds. --wait blocks until \
        everything retired is deleted. The volume must not be open read-write elsewhere (a running \
        QEMU cleans its volumes itself). Safe to interrupt: the volume then reads as before. JSON \
        fields: uri, segments_cleaned, bytes_reclaimed, blocks_copied, bytes_written, \
        retired_deleted, freed_bytes, held (files, bytes, readers: pid, host, reads, refreshes, \
        heartbeat_secs, remote), grace_segments, grace_bytes, grace_until, log_bytes_before, \
        log_bytes_after, live_bytes.\n\
        Example: hlfs gc local:///var/lib/hlfs/vm1 --wait")]
    Gc {
        /// Volume to clean
        uri: String,
        /// Clean only segments whose live fraction is at most this (0 to 1)
        #[arg(long, default_value_t = 0.8, value_name = "FRACTION")]
        max_utilization: f64,
        /// Clean at most this many segments (0: no limit)
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_segments: usize,
        /// Seconds a retired segment that no reader record accounts for waits before it is deleted
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        grace: u64,
        /// After the pass, wait until every retired segment is deleted (readers closed or moved on)
        #[arg(long)]
        wait: bool,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Export a volume over NBD and/or vhost-user-blk, for QEMUs and tools without the HLFS driver
    #[command(after_help = "Runs qemu-storage-daemon from the patched QEMU build (found next to qemu-img on \
        PATH, on PATH, in the newest build under /var/cache/hlfs-build, or at $HLFS_QEMU_STORAGE_DAEMON); \
        it replaces this process. The daemon opens the volume like any QEMU: read-write with the writer lock \
        (URI%SNAP: read-only), flush and FUA reach the log, discard drops blocks, the cleaner runs. Clients:\n  \
        qemu-system-x86_64 -drive file=nbd+unix:///vm1?socket=/run/hlfs/vm1.sock,format=raw,if=virtio\n  \
        nbdinfo 'nbd+unix:///vm1?socket=/run/hlfs/vm1.sock'\n  \
        qemu-system-x86_64 -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \
        -chardev socket,id=vub,path=/run/hlfs/vm1.vhost -device vhost-user-blk-pci,chardev=vub\n\
        Examples:\n  hlfs serve local:///var/lib/hlfs/vm1 --nbd unix:/run/hlfs/vm1.sock\n  \
        hlfs serve local:///var/lib/hlfs/vm1 --vhost-user-blk /run/hlfs/vm1.vhost --daemonize --pid-file /run/hlfs/vm1.pid\n  \
        hlfs serve 'local:///var/lib/hlfs/vm1%installed' --nbd 127.0.0.1:10809")]
    Serve {
        /// Volume to export (URI%SNAPSHOT exports that snapshot, read-only)
        uri: String,
        /// Serve NBD at unix:PATH, tcp:HOST:PORT or HOST:PORT
        #[arg(long, value_name = "ADDRESS")]
        nbd: Option<String>,
        /// Serve a vhost-user-blk device at this socket path
        #[arg(long, value_name = "SOCKET")]
        vhost_user_blk: Option<PathBuf>,
        /// NBD export name (default: the volume's name)
        #[arg(long)]
        name: Option<String>,
        /// Export read-only
        #[arg(long)]
        read_only: bool,
        /// Most NBD clients at once (0: no limit)
        #[arg(long, default_value_t = 0, value_name = "N")]
        connections: u32,
        /// vhost-user-blk queues
        #[arg(long, default_value_t = 1, value_name = "N")]
        queues: u16,
        /// Page cache use for the volume's segments
        #[arg(long, value_enum, default_value_t = hlfs_cli::serve::Cache::None)]
        cache: hlfs_cli::serve::Cache,
        /// Write the daemon's pid to this file
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// Return once the exports listen, leaving the daemon running in the background
        #[arg(long)]
        daemonize: bool,
        /// Print the daemon's command line instead of running it
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the space each snapshot and the head use (like rbd du)
    #[command(after_long_help = DU_JSON_HELP)]
    Du {
        /// Volume
        uri: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Make a clone independent of its base snapshot (copies what it still reads from it)
    #[command(after_help = "Every block the clone's head or one of its snapshots still reads from the base is \
        copied into the clone, then the clone drops its base: the base snapshot (or the whole base volume) can \
        then be deleted. Contents do not change. Safe to interrupt: the clone then still reads its base, and \
        running flatten again finishes the job. On a volume that is no clone it does nothing (exit 0). The \
        volume must not be open read-write elsewhere. A progress bar is shown when stderr is a terminal. JSON \
        fields: uri, base, blocks_copied, bytes_copied, zero_blocks, finished_earlier_flatten.\n\
        Example: hlfs flatten local:///var/lib/hlfs/vm2 && hlfs snapshot delete local:///var/lib/hlfs/golden base")]
    Flatten {
        /// Clone to flatten
        uri: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// List the extents that changed between two snapshots, or a snapshot and the head (like rbd diff)
    #[command(after_help = hlfs_cli::diff::DIFF_HELP)]
    Diff {
        /// The older view: URI%SNAPSHOT
        from: String,
        /// The newer view: URI%SNAPSHOT, or URI for its head (default: the head of FROM's volume)
        to: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Write the changes from snapshot --from to snapshot URI%SNAPSHOT into a file (or stdout), for import-diff
    #[command(after_help = "Without --from the diff holds the whole snapshot (its data blocks; zeros are left \
        out), which starts a chain on an empty volume of the same size. The volume is opened read-only, so a VM \
        may keep writing it: a snapshot never changes. FILE - writes to stdout. The stream is checksummed \
        (docs/format.md §13); import-diff refuses one that is damaged or cut short. A progress bar is shown when \
        stderr is a terminal.\n\
        Examples:\n  hlfs export-diff local:///var/lib/hlfs/vm1%monday full.hlfsdiff\n  \
        hlfs export-diff local:///var/lib/hlfs/vm1%tuesday - --from monday | ssh backup hlfs import-diff - local:///backup/vm1")]
    ExportDiff {
        /// The snapshot to export: URI%SNAPSHOT
        uri: String,
        /// File to write, or - for stdout
        file: PathBuf,
        /// The snapshot of the same volume the changes start from (its name); without it, a full diff
        #[arg(long, value_name = "SNAPSHOT")]
        from: Option<String>,
    },
    /// Apply a diff from export-diff to a volume and take its snapshot
    #[command(after_help = "The volume's newest snapshot must be the diff's --from snapshot as an earlier \
        import-diff made it from the same source (a full diff needs an empty volume of the same size without \
        snapshots), and its head must be unchanged since. The changes go into the head, then the diff's snapshot \
        is taken with the same name. A diff that is damaged or cut short is refused and its changes are \
        discarded. If import-diff is killed, the volume keeps every snapshot, and running import-diff again \
        discards the partial changes and applies the diff again; running it after it succeeded does nothing. \
        The volume is opened read-write (it must not be in use). FILE - reads stdin.\n\
        Examples:\n  hlfs create local:///backup/vm1 10G && hlfs import-diff full.hlfsdiff local:///backup/vm1\n  \
        hlfs export-diff local:///var/lib/hlfs/vm1%tuesday - --from monday | hlfs import-diff - local:///backup/vm1")]
    ImportDiff {
        /// Diff file, or - for stdin
        file: PathBuf,
        /// Volume to apply it to; must not name a snapshot
        uri: String,
    },
    /// Verify every record and checkpoint of a volume (like qemu-img check)
    #[command(visible_alias = "check", after_help = "Exits with 5 (corrupt) if errors are found. JSON fields: \
        uri, clean, segments, records, data_blocks, bytes, checkpoints, errors, notes, rebuilt_index.")]
    Fsck {
        /// Volume to check
        uri: String,
        /// Also rebuild the volume's index from the log (needs the write lock)
        #[arg(long)]
        rebuild_index: bool,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Print a shell completion script for hlfs (or snapshot.hlfs, clone.hlfs)
    #[command(after_help = "The Debian package installs these already. From a source build:\n  \
        hlfs completions bash > ~/.local/share/bash-completion/completions/hlfs\n  \
        hlfs completions zsh > ~/.zfunc/_hlfs   # with fpath+=(~/.zfunc) before compinit in ~/.zshrc\n  \
        hlfs completions bash --program snapshot.hlfs > ~/.local/share/bash-completion/completions/snapshot.hlfs")]
    Completions {
        /// Shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        /// Program whose command line to complete
        #[arg(long, value_enum, default_value_t = Program::Hlfs)]
        program: Program,
    },
    /// Write man pages for hlfs, each subcommand, snapshot.hlfs and clone.hlfs into DIR
    #[command(hide = true, after_help = "Example: hlfs generate-man target/man && man -l target/man/hlfs-snapshot.1")]
    GenerateMan {
        /// Directory to write the .1 files into (created if missing)
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapCmd {
    /// Take snapshot NAME of the volume's current contents (O(1))
    Create {
        /// Volume
        uri: String,
        /// Snapshot name (no '%', '/' or control characters)
        name: String,
    },
    /// List snapshots: id, name, disk size, VM state size, own bytes, date (UTC), clones
    #[command(after_help = "JSON is a list of objects with fields id, name, date, date_sec, date_nsec, \
        virtual_size, bytes, vm_state_size, vm_clock_nsec, clones, source (see `hlfs info --help`).")]
    List {
        /// Volume
        uri: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Delete snapshot NAME (refused while clones depend on it)
    Delete {
        /// Volume
        uri: String,
        /// Snapshot to delete
        name: String,
    },
    /// Make the volume's contents those of snapshot NAME again
    #[command(after_help = "Changes made since the snapshot are kept as a snapshot named pre-revert-N.")]
    Revert {
        /// Volume
        uri: String,
        /// Snapshot to go back to
        name: String,
    },
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create { uri, size, backing } => ops::create(&uri, size.as_deref(), backing.as_deref()),
        Cmd::Info { uri, output } => ops::info(&uri, output),
        Cmd::List { dir, output } => ops::list(&dir, output),
        Cmd::Mkdir { dir } => Ok(hlfs::listing::create_dir(&dir)?),
        Cmd::Rmdir { dir } => Ok(hlfs::listing::remove_dir(&dir)?),
        Cmd::Delete { uri } => ops::delete(&uri),
        Cmd::Resize { uri, size } => ops::resize(&uri, &size),
        Cmd::Unlock { uri } => ops::unlock(&uri),
        Cmd::Snapshot(SnapCmd::Create { uri, name }) => ops::snapshot_create(&uri, &name),
        Cmd::Snapshot(SnapCmd::List { uri, output }) => ops::snapshot_list(&uri, output),
        Cmd::Snapshot(SnapCmd::Delete { uri, name }) => ops::snapshot_delete(&uri, &name),
        Cmd::Snapshot(SnapCmd::Revert { uri, name }) => ops::snapshot_revert(&uri, &name),
        Cmd::Clone { src, dst, size } => {
            let size = size.as_deref().map(ops::parse_size).transpose()?;
            ops::clone(&src, &dst, size)
        }
        Cmd::Import { raw, uri, no_create, size } => ops::import(&raw, &uri, no_create, size.as_deref()).map(drop),
        Cmd::Export { uri, raw } => ops::export(&uri, &raw).map(drop),
        Cmd::Wipe { uri, offset, length } => ops::wipe(&uri, offset.as_deref(), length.as_deref()),
        Cmd::Fsck { uri, rebuild_index, output } => ops::fsck(&uri, rebuild_index, output),
        Cmd::Du { uri, output } => ops::du(&uri, output),
        Cmd::Diff { from, to, output } => hlfs_cli::diff::diff(&from, to.as_deref(), output),
        Cmd::ExportDiff { uri, file, from } => hlfs_cli::diff::export_diff(&uri, &file, from.as_deref()),
        Cmd::ImportDiff { file, uri } => hlfs_cli::diff::import_diff(&file, &uri),
        Cmd::Flatten { uri, output } => ops::flatten(&uri, output),
        Cmd::Serve { uri, nbd, vhost_user_blk, name, read_only, connections, queues, cache, pid_file, daemonize, dry_run } => {
            hlfs_cli::serve::serve(&hlfs_cli::serve::ServeArgs {
                uri,
                nbd,
                vhost_user_blk,
                name,
                read_only,
                connections,
                queues,
                cache,
                pid_file,
                daemonize,
                dry_run,
            })
        }
        Cmd::Completions { shell, program } => {
            let cmd = match program {
                Program::Hlfs => cli_command(),
                Program::SnapshotHlfs => hlfs_cli::seed::snapshot_command(),
                Program::CloneHlfs => hlfs_cli::seed::clone_command(),
            };
            hlfs_cli::generate::completion(shell, cmd, &mut std::io::stdout().lock());
            Ok(())
        }
        Cmd::GenerateMan { dir } => {
            let cmds = vec![cli_command(), hlfs_cli::seed::snapshot_command(), hlfs_cli::seed::clone_command()];
            let written = hlfs_cli::generate::man_pages(cmds, &dir)
                .map_err(|e| anyhow::anyhow!("cannot write man pages into {}: {e}", dir.display()))?;
            println!("wrote {} man pages into {}", written.len(), dir.display());
            Ok(())
        }
        Cmd::Gc { uri, max_utilization, max_segments, grace, wait, output } => {
            let opts = hlfs::GcOptions { max_utilization, max_segments, retire_grace_secs: grace };
            ops::gc(&uri, &opts, wait, output)
        }
    }
}

/// The full command line: the derive plus the exit-code table, which is
/// built from the same list the mapping uses.
fn cli_command() -> clap::Command {
    Cli::command().after_help(hlfs_cli::exit_codes_help())
}

fn main() -> ExitCode {
    let matches = cli_command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    hlfs_cli::init_logging("hlfs", cli.verbose);
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => hlfs_cli::fail("hlfs", &e),
    }
}
