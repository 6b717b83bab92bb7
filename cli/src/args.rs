//! The command line: every command, flag and value parser (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use strata_store::Digest;

use crate::parse::{Label, parse_duration, parse_label};

const GLOBAL: &str = "Global options";

/// strata's maintenance CLI: inspect and edit a store's namespaces, content, images and
/// leases, and collect, explain, measure and check what it keeps.
///
/// Exit status: 0 success, 1 problems found (fsck), 2 error (including usage errors).
#[derive(Debug, Parser)]
#[command(
    name = "gcctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Store root directory [default: /var/lib/strata as root, else
    /// $XDG_DATA_HOME/strata, else $HOME/.local/share/strata]
    #[arg(
        long,
        global = true,
        env = "STRATA_ROOT",
        value_name = "DIR",
        help_heading = GLOBAL
    )]
    pub root: Option<PathBuf>,

    /// Namespace to act in
    #[arg(
        short = 'n',
        long,
        global = true,
        env = "STRATA_NAMESPACE",
        default_value = "default",
        value_name = "NAME",
        help_heading = GLOBAL
    )]
    pub namespace: String,

    /// Print data as JSON instead of tables
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,

    /// Log more on stderr (-v info, -vv debug, -vvv trace); RUST_LOG is used without it
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The command families.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the root, its database and what each namespace holds
    Info,
    /// Manage namespaces
    #[command(subcommand, visible_alias = "namespaces")]
    Ns(NsCommand),
    /// Manage blobs and in-flight ingests
    #[command(subcommand)]
    Content(ContentCommand),
    /// Manage image records
    #[command(subcommand, visible_alias = "image")]
    Images(ImagesCommand),
    /// Manage leases and their resources
    #[command(subcommand, visible_alias = "lease")]
    Leases(LeasesCommand),
    /// Manage snapshots (overlay or native)
    #[command(visible_alias = "snapshot")]
    Snapshots(SnapshotsArgs),
    /// Import images from an OCI layout directory, its tar archive, or a docker-save archive
    Import {
        /// The layout directory or archive
        source: PathBuf,
        /// Name for the image (when the source holds exactly one)
        #[arg(long)]
        name: Option<String>,
        /// Unpack the imported images into the snapshotter
        #[arg(long)]
        unpack: bool,
        /// Snapshotter for --unpack
        #[arg(long, default_value = "overlay", value_parser = ["overlay", "native"])]
        snapshotter: String,
    },
    /// Export images as an OCI layout tar archive
    Export {
        /// Images to export
        #[arg(required = true)]
        names: Vec<String>,
        /// Archive to write
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Commit an active snapshot's changes as a new image
    Commit {
        /// Active snapshot key (a container's root filesystem)
        key: String,
        /// Name of the new image
        name: String,
        /// Snapshotter holding KEY
        #[arg(long, default_value = "overlay", value_parser = ["overlay", "native"])]
        snapshotter: String,
        /// Base image [default: the image unpacked to KEY's parent]
        #[arg(long)]
        base: Option<String>,
        /// Author recorded in the config and its history
        #[arg(long)]
        author: Option<String>,
        /// Comment recorded in the history
        #[arg(long, short = 'm')]
        message: Option<String>,
        /// The command that made the changes, for the history
        #[arg(long)]
        created_by: Option<String>,
    },
    /// Unpack an image's layers into snapshots (chain IDs)
    Unpack {
        /// Image name
        name: String,
        /// Snapshotter
        #[arg(long, default_value = "overlay", value_parser = ["overlay", "native"])]
        snapshotter: String,
    },
    /// Collect garbage: remove every record no root reaches, then every file no record names
    ///
    /// Roots are images, containers, unexpired leases and ingests, and objects labelled
    /// containerd.io/gc.root; the collection covers every namespace. Prints how long each
    /// phase took (the sweep is how long the database's write lock was held), what was
    /// removed by kind, and the bytes freed; --json prints the whole report.
    ///
    /// Files that could not be removed (retried by the next collection) and records whose
    /// data is missing on disk are warnings on stderr, not failures: the exit status is 0.
    /// Run `gcctl fsck` to look into them.
    Gc {
        /// Remove nothing: print what a collection would remove now, with the bytes it would
        /// free (unique) and those that stay because something kept shares them
        #[arg(long)]
        dry_run: bool,
    },
    /// Explain why an object is kept: every root that reaches it and the path from each
    ///
    /// OBJECT is a blob digest, an image name, a lease id, an ingest ref, or a snapshot key
    /// (bare, or <snapshotter>/<key>), looked up in the namespace given by -n; or an absolute
    /// path inside the store (a blob file, or any file under a snapshot's or ingest's
    /// directory), which names the object whose data it is.
    Why {
        /// Digest, image name, lease id, ingest ref, snapshot key, or a path in the store
        object: String,
    },
    /// Show what uses the store's disk space, by image, namespace or lease
    ///
    /// UNIQUE bytes go when the owner goes; SHARED bytes are also used by another owner.
    Du {
        /// Attribute usage to each image, namespace or lease
        #[arg(long, value_enum, default_value_t = DuBy::Image)]
        by: DuBy,
    },
    /// Check every record against its data and every file against the records
    ///
    /// Exit status 1 when problems were found (and, with --repair, not all repaired), 0 when
    /// the store is clean.
    Fsck {
        /// Repair what can be: broken data is moved into <root>/quarantine/<time>/ and the
        /// records removed are saved there as records.json; nothing is deleted
        #[arg(long)]
        repair: bool,
    },
    /// Rewrite the database file to reclaim its free pages; prints its size before and after
    Compact,
}

/// `gcctl du --by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DuBy {
    /// Each image (its manifest, config, layers and snapshots)
    Image,
    /// Each namespace
    Namespace,
    /// Each lease (what it holds)
    Lease,
}

/// `gcctl snapshots [--snapshotter S] ...`
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Snapshotter: overlay (needs root and the overlay module) or native (full copies)
    #[arg(long, short = 's', default_value = "overlay", global = true, value_parser = ["overlay", "native"])]
    pub snapshotter: String,
    #[command(subcommand)]
    pub command: SnapshotsCommand,
}

/// `gcctl snapshots ...`
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots (KEY PARENT KIND)
    #[command(visible_alias = "list")]
    Ls(Filters),
    /// Show snapshots as a tree of parents and children
    Tree,
    /// Show one snapshot
    Info {
        /// Snapshot key
        key: String,
    },
    /// Create an active snapshot KEY on PARENT and print its mounts
    Prepare {
        /// New snapshot key
        key: String,
        /// Committed parent
        parent: Option<String>,
        /// Label, KEY=VALUE; repeatable
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Create a read-only view KEY of PARENT and print its mounts
    View {
        /// New snapshot key
        key: String,
        /// Committed parent
        parent: Option<String>,
        /// Label, KEY=VALUE; repeatable
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Commit the active snapshot KEY as NAME
    Commit {
        /// Name of the committed snapshot
        name: String,
        /// Active snapshot key
        key: String,
        /// Label, KEY=VALUE; repeatable
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Remove snapshots (children first)
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Snapshot keys
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Print the shell command that mounts KEY at TARGET (--json: the mount list)
    Mounts {
        /// Snapshot key
        key: String,
        /// Mount point
        target: PathBuf,
    },
    /// Show disk usage (KEY SIZE INODES)
    Usage {
        /// Snapshot keys [default: all]
        keys: Vec<String>,
    },
    /// Set labels on a snapshot; KEY= deletes one
    Label {
        /// Snapshot key
        key: String,
        /// Labels, KEY=VALUE
        #[arg(required = true, value_parser = parse_label)]
        labels: Vec<Label>,
    },
}

/// `--filter`, repeatable; several filters are OR'd, selectors inside one are AND'd.
#[derive(Debug, Args)]
pub struct Filters {
    /// Filter in containerd's syntax, e.g. 'labels."k"==v' or 'name~=^docker.io/';
    /// repeat to OR several
    #[arg(long = "filter", short = 'f', value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// `gcctl ns ...`
#[derive(Debug, Subcommand)]
pub enum NsCommand {
    /// List namespaces
    #[command(visible_alias = "list")]
    Ls,
    /// Create a namespace
    Create {
        /// Namespace name
        name: String,
        /// Label to set, KEY=VALUE; repeatable
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Remove empty namespaces (their leases and ingests go with them)
    #[command(visible_alias = "remove")]
    Rm {
        /// Namespace names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set labels on a namespace; an empty value (KEY=) removes the label
    Label {
        /// Namespace name
        name: String,
        /// Labels, KEY=VALUE
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
}

/// `gcctl content ...`
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List blobs (DIGEST SIZE AGE LABELS)
    #[command(visible_alias = "list")]
    Ls(Filters),
    /// Show one blob's record
    Info {
        /// Blob digest, ALG:HEX
        digest: Digest,
    },
    /// Write a blob's exact bytes to stdout
    Get {
        /// Blob digest, ALG:HEX
        digest: Digest,
    },
    /// Read stdin into a blob and print its digest
    Ingest(IngestArgs),
    /// Set labels on a blob; an empty value (KEY=) removes the label
    Label {
        /// Blob digest, ALG:HEX
        digest: Digest,
        /// Labels, KEY=VALUE
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Remove blobs from this namespace (their files go at the next garbage collection)
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Blob digests
        #[arg(required = true)]
        digests: Vec<Digest>,
    },
    /// List in-flight ingests (REF OFFSET TOTAL EXPECTED STARTED UPDATED)
    Active(Filters),
    /// Abandon in-flight ingests and delete their data
    Abort {
        /// Ingest refs
        #[arg(required = true)]
        refs: Vec<String>,
    },
}

/// `gcctl content ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Ingest ref: names the write so an interrupted one can be resumed
    pub reference: String,
    /// Fail unless the content has this digest (also picks the hash algorithm)
    #[arg(long, value_name = "DIGEST")]
    pub expected_digest: Option<Digest>,
    /// Fail unless the content has this many bytes
    #[arg(long, value_name = "BYTES")]
    pub expected_size: Option<u64>,
    /// Label for the blob, KEY=VALUE; repeatable
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<Label>,
    /// Lease that holds the ingest and then the blob
    #[arg(long, value_name = "ID")]
    pub lease: Option<String>,
}

/// `gcctl images ...`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List images (NAME TYPE DIGEST SIZE LABELS)
    #[command(visible_alias = "list")]
    Ls(Filters),
    /// Create an image record pointing at a target descriptor
    Create(ImageCreateArgs),
    /// Create image DST with SRC's target and labels
    Tag {
        /// Existing image
        source: String,
        /// New image name
        destination: String,
        /// Replace DST's target and labels if it exists
        #[arg(long)]
        force: bool,
    },
    /// Set labels on an image; an empty value (KEY=) removes the label
    Label {
        /// Image name
        name: String,
        /// Labels, KEY=VALUE
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Remove image records (their content goes at the next garbage collection)
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Image names
        #[arg(required = true)]
        names: Vec<String>,
        /// Then run a full garbage collection and print its summary (with --json:
        /// {"removed": [...], "gc": <report>})
        #[arg(long)]
        sync: bool,
    },
}

/// `gcctl images create`.
#[derive(Debug, Args)]
pub struct ImageCreateArgs {
    /// Image name, e.g. docker.io/library/alpine:3.20
    pub name: String,
    /// Digest of the target (manifest or index)
    #[arg(long, value_name = "DIGEST")]
    pub target: Digest,
    /// Media type of the target
    #[arg(long, value_name = "TYPE")]
    pub media_type: String,
    /// Size of the target in bytes
    #[arg(long, value_name = "BYTES")]
    pub size: u64,
    /// Image label, KEY=VALUE; repeatable
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<Label>,
    /// Target annotation, KEY=VALUE; repeatable
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub annotations: Vec<Label>,
}

/// `gcctl leases ...`
#[derive(Debug, Subcommand)]
pub enum LeasesCommand {
    /// List leases (ID CREATED EXPIRES LABELS)
    #[command(visible_alias = "list")]
    Ls(Filters),
    /// Create a lease and print its id
    Create {
        /// Lease id [default: <unix nanos>-<random>]
        #[arg(long)]
        id: Option<String>,
        /// Expire after this long (Go syntax: 24h, 30m, 1h30m); 0 never expires
        #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = parse_duration)]
        expires: Duration,
        /// Label, KEY=VALUE; repeatable
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Remove leases (what they held goes at the next garbage collection)
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// Lease ids
        #[arg(required = true)]
        ids: Vec<String>,
        /// Then run a full garbage collection and print its summary (with --json:
        /// {"removed": [...], "gc": <report>})
        #[arg(long)]
        sync: bool,
    },
    /// Remove the namespace's expired leases, then run a full garbage collection
    ///
    /// Prints the leases removed and the collection's summary (with --json:
    /// {"removed": [...], "gc": <report>}).
    Prune {
        /// Remove every lease whose containerd.io/gc.expire time has passed (required: the
        /// only criterion so far)
        #[arg(long, required = true)]
        expired: bool,
    },
    /// Add a resource to a lease
    Add(ResourceArgs),
    /// Remove a resource from a lease
    RmResource(ResourceArgs),
    /// List a lease's resources (TYPE ID)
    Resources {
        /// Lease id
        id: String,
    },
}

/// A lease and one resource of it.
#[derive(Debug, Args)]
pub struct ResourceArgs {
    /// Lease id
    pub id: String,
    /// Resource type: content, ingests, images or snapshots/<snapshotter>
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// Resource id: a digest, an ingest ref, an image name or a snapshot key
    #[arg(value_name = "RESOURCE_ID")]
    pub resource: String,
}
