use super::*;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

fn digest(dir: &Path) -> String {
    digest_with(dir, &WalkOptions::default())
}

fn digest_with(dir: &Path, options: &WalkOptions) -> String {
    let entries = walk(dir, options).unwrap();
    write_layer(&entries, io::sink()).unwrap().1.digest
}

fn paths(dir: &Path, options: &WalkOptions) -> Vec<String> {
    walk(dir, options)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect()
}

fn layer_headers(dir: &Path) -> Vec<(String, u32, u64, u64, tar::EntryType)> {
    let entries = walk(dir, &WalkOptions::default()).unwrap();
    let (bytes, _) = write_layer(&entries, Vec::new()).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.mtime().unwrap(),
                h.entry_type(),
            )
        })
        .collect()
}

const APP: &[(&str, &str)] = &[
    ("deploy/app.yaml", "kind: Deployment\n"),
    ("deploy/svc.yaml", "kind: Service\n"),
    ("kustomization.yaml", "resources: [deploy/app.yaml]\n"),
    ("a.txt", "a\n"),
];

#[test]
fn same_content_gives_the_same_digest_whatever_the_metadata() {
    let one = tree(APP);
    // Same files, created in reverse order, with other modes and times.
    let two = tempfile::tempdir().unwrap();
    for (path, content) in APP.iter().rev() {
        let p = two.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
    }
    fs::set_permissions(two.path().join("deploy"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(digest(one.path()), digest(two.path()));

    // Content, names and the executable bit are what count.
    fs::write(two.path().join("a.txt"), "b\n").unwrap();
    assert_ne!(digest(one.path()), digest(two.path()));
    fs::write(two.path().join("a.txt"), "a\n").unwrap();
    fs::set_permissions(two.path().join("a.txt"), fs::Permissions::from_mode(0o700)).unwrap();
    assert_ne!(digest(one.path()), digest(two.path()));
}

#[test]
fn layout_follows_flux_with_normalised_headers() {
    let dir = tree(APP);
    fs::set_permissions(dir.path().join("a.txt"), fs::Permissions::from_mode(0o750)).unwrap();
    let headers = layer_headers(dir.path());
    let names: Vec<_> = headers.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(
        names,
        [
            ".",
            "a.txt",
            "deploy",
            "deploy/app.yaml",
            "deploy/svc.yaml",
            "kustomization.yaml"
        ]
    );
    for (name, mode, uid, mtime, kind) in &headers {
        assert_eq!((*uid, *mtime), (0, 0), "{name}");
        let expected = match (name.as_str(), kind.is_dir()) {
            (_, true) | ("a.txt", _) => 0o755,
            _ => 0o644,
        };
        assert_eq!(*mode, expected, "{name}");
    }
}

use crate::git::tests::run as git;

#[test]
fn in_a_git_work_tree_the_index_decides_which_files_are_executable() {
    let repo = tree(&[
        ("deploy/run.sh", "#!/bin/sh\n"),
        ("deploy/plain.sh", "#!/bin/sh\n"),
        ("deploy/sub/tool", "x"),
        ("deploy/app.yaml", "kind: x\n"),
    ]);
    let root = repo.path();
    git(root, &["init", "-q"]);
    git(root, &["add", "."]);
    git(
        root,
        &[
            "update-index",
            "--chmod=+x",
            "deploy/run.sh",
            "deploy/sub/tool",
        ],
    );
    git(root, &["commit", "-q", "-m", "one"]);
    let mode = |path: &str, mode| {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap()
    };
    // The disk says the opposite of the index (as on Windows, or after an
    // uncommitted chmod): Git wins.
    mode("deploy/run.sh", 0o644);
    mode("deploy/sub/tool", 0o600);
    mode("deploy/plain.sh", 0o755);
    // Untracked files keep the file system's bit.
    fs::write(root.join("deploy/new.sh"), "x").unwrap();
    mode("deploy/new.sh", 0o755);
    let modes: Vec<_> = layer_headers(&root.join("deploy"))
        .into_iter()
        .map(|(name, mode, ..)| (name, mode))
        .collect();
    let expected = [
        (".", 0o755),
        ("app.yaml", 0o644),
        ("new.sh", 0o755),
        ("plain.sh", 0o644),
        ("run.sh", 0o755),
        ("sub", 0o755),
        ("sub/tool", 0o755),
    ];
    let expected: Vec<_> = expected.iter().map(|(n, m)| (n.to_string(), *m)).collect();
    assert_eq!(modes, expected);

    // The same files outside any work tree: the file system decides.
    let copy = tree(&[("run.sh", "#!/bin/sh\n"), ("plain.sh", "#!/bin/sh\n")]);
    fs::set_permissions(
        copy.path().join("plain.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let modes: Vec<_> = layer_headers(copy.path())
        .into_iter()
        .map(|(name, mode, ..)| (name, mode))
        .collect();
    assert!(
        modes.contains(&("plain.sh".to_string(), 0o755)),
        "{modes:?}"
    );
    assert!(modes.contains(&("run.sh".to_string(), 0o644)), "{modes:?}");
}

#[test]
fn default_excludes_apply_and_ignore_flags_add_to_them() {
    let dir = tree(&[
        ("app.yaml", "x"),
        ("logo.png", "png"),
        (".git/config", "git"),
        (".gitignore", "*"),
        ("notes.md", "notes"),
        ("charts/c.tar.gz", "gz"),
    ]);
    assert_eq!(
        paths(dir.path(), &WalkOptions::default()),
        [".", "app.yaml", "charts", "notes.md"]
    );
    let options = WalkOptions {
        ignore: vec!["*.md".into(), "charts/".into()],
        ..Default::default()
    };
    // The defaults still hold when patterns are added.
    assert_eq!(paths(dir.path(), &options), [".", "app.yaml"]);
}

#[test]
fn sourceignore_files_apply_at_every_level_with_negation() {
    let dir = tree(&[
        (".sourceignore", "*.secret\n/tmp/\n"),
        ("app.yaml", "x"),
        ("db.secret", "s"),
        ("tmp/scratch.yaml", "t"),
        ("sub/.sourceignore", "!keep.secret\nlocal.yaml\n"),
        ("sub/keep.secret", "k"),
        ("sub/other.secret", "o"),
        ("sub/local.yaml", "l"),
        ("sub/tmp/in-sub.yaml", "kept: /tmp/ is anchored at the root"),
    ]);
    assert_eq!(
        paths(dir.path(), &WalkOptions::default()),
        [
            ".",
            ".sourceignore",
            "app.yaml",
            "sub",
            "sub/.sourceignore",
            "sub/keep.secret",
            "sub/tmp",
            "sub/tmp/in-sub.yaml"
        ]
    );
    let rules = IgnoreRules::new(&canonical_root(dir.path()).unwrap(), &[]).unwrap();
    assert!(rules.ignores(Path::new("sub/other.secret"), false));
    assert!(!rules.ignores(Path::new("sub/keep.secret"), false));
    assert!(rules.ignores(Path::new("tmp/new.yaml"), false));
    assert!(rules.ignores(Path::new(".git/index"), false));
    assert!(!rules.ignores(Path::new("app.yaml"), false));
}

#[test]
fn symlinks_inside_are_packaged_as_their_targets() {
    let dir = tree(&[("base/app.yaml", "kind: A\n")]);
    symlink("base/app.yaml", dir.path().join("link.yaml")).unwrap();
    symlink("base", dir.path().join("linked-dir")).unwrap();
    let copy = tree(&[
        ("base/app.yaml", "kind: A\n"),
        ("link.yaml", "kind: A\n"),
        ("linked-dir/app.yaml", "kind: A\n"),
    ]);
    assert_eq!(digest(dir.path()), digest(copy.path()));
}

#[test]
fn symlinks_that_escape_dangle_or_loop_are_errors_naming_the_path() {
    let outside = tree(&[("secret.yaml", "s")]);
    let dir = tree(&[("app.yaml", "x")]);
    symlink(
        outside.path().join("secret.yaml"),
        dir.path().join("escape.yaml"),
    )
    .unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("escape.yaml") && err.contains("outside the directory"),
        "{err}"
    );

    let dir = tree(&[("app.yaml", "x")]);
    symlink("nowhere.yaml", dir.path().join("dangling.yaml")).unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dangling.yaml") && err.contains("dangling"),
        "{err}"
    );

    let dir = tree(&[("app.yaml", "x")]);
    symlink("b", dir.path().join("a")).unwrap();
    symlink("a", dir.path().join("b")).unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("loop"), "{err}");

    let dir = tree(&[("sub/app.yaml", "x")]);
    symlink("..", dir.path().join("sub/up")).unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("sub/up") && err.contains("loop"), "{err}");
}

#[test]
fn ignored_symlinks_are_never_followed_whatever_they_lead_to() {
    // A Nix `result` link (outside the root), an Emacs lock file (dangling),
    // a dangling link under an ignored directory and a loop, all ignored.
    let outside = tree(&[("store/pkg/bin", "x")]);
    let dir = tree(&[
        ("app.yaml", "kind: A\n"),
        (".sourceignore", "result\nloop-*\nscratch/\nout/\n"),
        ("scratch/keep.txt", "x"),
    ]);
    symlink(outside.path().join("store/pkg"), dir.path().join("result")).unwrap();
    symlink("ann@host.4242:1700000000", dir.path().join(".#app.yaml")).unwrap();
    symlink("nowhere", dir.path().join("scratch/dangling")).unwrap();
    symlink("loop-b", dir.path().join("loop-a")).unwrap();
    symlink("loop-a", dir.path().join("loop-b")).unwrap();
    // `out/` drops directories only: a link to a directory outside is one.
    symlink(outside.path().join("store"), dir.path().join("out")).unwrap();
    assert_eq!(
        paths(dir.path(), &WalkOptions::default()),
        [".", ".sourceignore", "app.yaml"]
    );
    // As if the links were not there.
    let clean = tree(&[
        ("app.yaml", "kind: A\n"),
        (".sourceignore", "result\nloop-*\nscratch/\nout/\n"),
    ]);
    assert_eq!(digest(dir.path()), digest(clean.path()));
    // `--ignore` and Git's rules decide first too.
    let dir = tree(&[("app.yaml", "kind: A\n"), (".gitignore", "/result\n")]);
    symlink("/nonexistent/nix/store/abc-app", dir.path().join("result")).unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    git(&root, &["init", "-q"]);
    let git_rules = WalkOptions {
        git_ignore: true,
        ..Default::default()
    };
    assert_eq!(paths(&root, &git_rules), [".", "app.yaml"]);
    let flag = WalkOptions {
        ignore: vec!["result".into()],
        ..Default::default()
    };
    assert_eq!(paths(&root, &flag), [".", "app.yaml"]);
    // The watcher's single-path view: ignored, decided without following it.
    let rules = IgnoreRules::for_walk(&root, &git_rules).unwrap();
    assert!(rules.ignores(Path::new("result"), false));
    assert!(rules.ignores(Path::new("result"), true));
}

#[test]
fn emacs_lock_files_are_left_out_by_default_and_can_be_brought_back() {
    let dir = tree(&[
        ("app.yaml", "kind: A\n"),
        ("sub/.#svc.yaml", "ann@host.1:2"),
    ]);
    symlink("ann@host.4242:1700000000", dir.path().join(".#app.yaml")).unwrap();
    assert_eq!(
        paths(dir.path(), &WalkOptions::default()),
        [".", "app.yaml", "sub"]
    );
    let root = fs::canonicalize(dir.path()).unwrap();
    let rules = IgnoreRules::new(&root, &[]).unwrap();
    let why = rules.rule_for(Path::new("sub/.#svc.yaml"), false).unwrap();
    assert_eq!(why.by, IgnoredKind::Default);
    assert!(why.rule.contains("lock file"), "{}", why.rule);
    // A `!` rule keeps a regular file of that name; the dangling link then
    // is an error naming it, like any other.
    let keep = WalkOptions {
        ignore: vec!["!.#*".into()],
        ..Default::default()
    };
    let err = walk(dir.path(), &keep).unwrap_err().to_string();
    assert!(
        err.contains(".#app.yaml") && err.contains("dangling"),
        "{err}"
    );
    fs::remove_file(dir.path().join(".#app.yaml")).unwrap();
    assert_eq!(
        paths(dir.path(), &keep),
        [".", "app.yaml", "sub", "sub/.#svc.yaml"]
    );
}

#[test]
fn a_dangling_link_not_ignored_is_an_error_saying_what_to_do() {
    let dir = tree(&[("app.yaml", "x"), (".sourceignore", "result/\n")]);
    // `result/` drops directories only; a link that leads nowhere is none.
    symlink("/nonexistent/nix/store/abc", dir.path().join("result")).unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("result: dangling symlink") && err.contains(".sourceignore or --ignore"),
        "{err}"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = walk(Path::new("/no/such/dir"), &WalkOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "/no/such/dir: no such directory");

    let dir = tree(&[("file.yaml", "x")]);
    let err = walk(&dir.path().join("file.yaml"), &WalkOptions::default()).unwrap_err();
    assert!(
        err.to_string().ends_with("file.yaml: not a directory"),
        "{err}"
    );

    let dir = tree(&[("logo.png", "x"), ("docs/readme.md", "y")]);
    let options = WalkOptions {
        ignore: vec!["docs/".into()],
        ..Default::default()
    };
    let err = walk(dir.path(), &options).unwrap_err().to_string();
    assert!(err.contains("nothing to package"), "{err}");

    let dir = tree(&[("big.yaml", &"x".repeat(2048))]);
    let options = WalkOptions {
        max_file_size: 1024,
        ..Default::default()
    };
    let err = walk(dir.path(), &options).unwrap_err().to_string();
    assert!(
        err.contains("big.yaml") && err.contains("2048 bytes") && err.contains("--max-file-size"),
        "{err}"
    );

    let dir = tree(&[("ok.yaml", "x")]);
    let bad = std::ffi::OsStr::from_bytes(b"bad-\xff.yaml");
    fs::write(dir.path().join(bad), "x").unwrap();
    let err = walk(dir.path(), &WalkOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not valid UTF-8") && err.contains("bad-"),
        "{err}"
    );
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn an_unreadable_file_fails_the_build_and_leaves_no_output() {
    let dir = tree(&[("app.yaml", "x")]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("artifact.tgz");
    // A file that vanishes between the walk and the read behaves like an unreadable one.
    let mut entries = walk(dir.path(), &WalkOptions::default()).unwrap();
    fs::remove_file(dir.path().join("app.yaml")).unwrap();
    let err = write_layer(&entries, io::sink()).unwrap_err().to_string();
    assert!(err.starts_with("app.yaml: "), "{err}");

    // And through build_to_file: nothing is left in the output directory.
    fs::write(dir.path().join("app.yaml"), "x").unwrap();
    fs::write(dir.path().join("gone.yaml"), "x").unwrap();
    entries = walk(dir.path(), &WalkOptions::default()).unwrap();
    assert_eq!(entries.len(), 3);
    let err = build_to_file(
        &dir.path().join("missing"),
        &WalkOptions::default(),
        &target,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no such directory"));
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn build_to_file_writes_what_it_reports() {
    let dir = tree(APP);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("artifact.tgz");
    let built = build_to_file(dir.path(), &WalkOptions::default(), &target).unwrap();
    let bytes = fs::read(&target).unwrap();
    assert_eq!(built.layer.digest, sha256_digest(&bytes));
    assert_eq!(built.layer.size, bytes.len() as u64);
    assert_eq!(built.layer.digest, digest(dir.path()));
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

#[test]
fn a_file_that_changes_while_packaged_is_an_error() {
    let dir = tree(&[("app.yaml", "short")]);
    let entries = walk(dir.path(), &WalkOptions::default()).unwrap();
    fs::write(dir.path().join("app.yaml"), "much longer than before").unwrap();
    let err = write_layer(&entries, io::sink()).unwrap_err().to_string();
    assert!(err.contains("app.yaml") && err.contains("changed"), "{err}");
    let entries = walk(dir.path(), &WalkOptions::default()).unwrap();
    fs::write(dir.path().join("app.yaml"), "x").unwrap();
    let err = write_layer(&entries, io::sink()).unwrap_err().to_string();
    assert!(err.contains("changed"), "{err}");
}

/// A gzip'd tarball of `entries` (path, declared size, data), written raw so
/// that a header may claim more than its data holds.
fn raw_layer(entries: &[(&str, tar::EntryType, u64, &[u8])]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for (path, kind, size, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(*size);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        io::Write::write_all(&mut gz, h.as_bytes()).unwrap();
        io::Write::write_all(&mut gz, data).unwrap();
        let pad = (512 - data.len() % 512) % 512;
        io::Write::write_all(&mut gz, &vec![0u8; pad]).unwrap();
    }
    io::Write::write_all(&mut gz, &[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

fn small_limits() -> LayerLimits {
    LayerLimits {
        compressed: 1 << 20,
        decompressed: 4 << 20,
        entry: 1 << 20,
        entries: 20,
        header: 4096,
    }
}

#[test]
fn a_gzip_bomb_stops_at_the_inflated_limit() {
    // 64 MiB of zeros in a few dozen KiB, spread over files under the
    // per-file limit: only the total stops it.
    let zeros = vec![0u8; 512 * 1024];
    let names: Vec<String> = (0..128).map(|i| format!("f{i}.yaml")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|n| {
            (
                n.as_str(),
                tar::EntryType::Regular,
                zeros.len() as u64,
                &zeros[..],
            )
        })
        .collect();
    let bomb = raw_layer(&entries);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let limits = LayerLimits {
        entries: 1000,
        ..small_limits()
    };
    let err = content_of_layer_within(&bomb[..], &limits)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("too large to read") && err.contains("its content") && err.contains("4 MiB"),
        "{err}"
    );
    // Under the limit, the same layer reads.
    let ok = LayerLimits {
        decompressed: 65 << 20,
        ..limits
    };
    assert_eq!(content_of_layer_within(&bomb[..], &ok).unwrap().len(), 128);
}

#[test]
fn one_huge_file_is_refused_by_its_header_before_it_is_read() {
    // The header claims 300 MiB and the stream holds 1 KiB: the claim
    // alone is refused, with the default limits.
    let layer = raw_layer(&[(
        "big.yaml",
        tar::EntryType::Regular,
        300 << 20,
        &[b'x'; 1024],
    )]);
    let err = content_of_layer(&layer[..]).unwrap_err().to_string();
    assert!(
        err.contains("big.yaml (314572800 bytes)") && err.contains("256 MiB"),
        "{err}"
    );
}

#[test]
fn countless_entries_and_huge_long_names_are_refused() {
    let names: Vec<String> = (0..30).map(|i| format!("d{i}/")).collect();
    let dirs: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), tar::EntryType::Directory, 0, &[][..]))
        .collect();
    let err = content_of_layer_within(&raw_layer(&dirs)[..], &small_limits())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("number of entries") && err.contains("20 entries"),
        "{err}"
    );

    // A GNU long name of 16 MiB (a few KiB compressed): never read into memory.
    let name = vec![b'a'; 16 << 20];
    let layer = raw_layer(&[
        (
            "././@LongLink",
            tar::EntryType::GNULongName,
            name.len() as u64,
            &name,
        ),
        ("x.yaml", tar::EntryType::Regular, 1, b"x"),
    ]);
    let err = content_of_layer(&layer[..]).unwrap_err().to_string();
    assert!(
        err.contains("extended header of 16777216 bytes") && err.contains("64 KiB"),
        "{err}"
    );
}

#[test]
fn long_names_in_gnu_and_pax_form_are_read() {
    let long = format!("deploy/{}/app.yaml", "n".repeat(150));
    // GNU long names: what tar::Builder writes.
    let mut gnu = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    gnu.append_data(&mut h, &long, &b"a\n"[..]).unwrap();
    let gnu = gnu.into_inner().unwrap().finish().unwrap();
    let map = content_of_layer(&gnu[..]).unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), [&long]);
    // PAX paths: what Go's archive/tar (the flux CLI) writes.
    let mut pax = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    pax.append_pax_extensions([("path", long.as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("short.yaml").unwrap();
    h.set_size(2);
    h.set_cksum();
    pax.append(&h, &b"a\n"[..]).unwrap();
    let pax = pax.into_inner().unwrap().finish().unwrap();
    assert_eq!(content_of_layer(&pax[..]).unwrap(), map);
}

#[test]
fn limits_read_in_words() {
    assert_eq!(size_in_words(256 << 20), "256 MiB");
    assert_eq!(size_in_words(1 << 30), "1 GiB");
    assert_eq!(size_in_words(64 << 10), "64 KiB");
    assert_eq!(size_in_words(1000), "1000 bytes");
    assert_eq!(size_in_words((1 << 20) + 1), "1048577 bytes");
}

#[test]
fn diff_compares_content_not_gzip_bytes() {
    let dir = tree(APP);
    let entries = walk(dir.path(), &WalkOptions::default()).unwrap();
    let (layer, _) = write_layer(&entries, Vec::new()).unwrap();
    let local = content_of_dir(dir.path(), &WalkOptions::default()).unwrap();
    let remote = content_of_layer(&layer[..]).unwrap();
    assert_eq!(local, remote);
    assert!(TreeDiff::between(&local, &remote).is_empty());

    // A tarball from another encoder (single-stream gzip, "./" names, other modes).
    let mut other = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    for (path, content) in APP {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(99);
        other
            .append_data(&mut h, format!("./{path}"), content.as_bytes())
            .unwrap();
    }
    let other = other.into_inner().unwrap().finish().unwrap();
    assert_ne!(sha256_digest(&other), sha256_digest(&layer));
    assert_eq!(content_of_layer(&other[..]).unwrap(), local);

    fs::write(dir.path().join("a.txt"), "changed\n").unwrap();
    fs::write(dir.path().join("new.yaml"), "n\n").unwrap();
    fs::remove_file(dir.path().join("deploy/svc.yaml")).unwrap();
    let local = content_of_dir(dir.path(), &WalkOptions::default()).unwrap();
    let diff = TreeDiff::between(&local, &remote);
    assert_eq!(diff.added, ["new.yaml"]);
    assert_eq!(diff.removed, ["deploy/svc.yaml"]);
    assert_eq!(diff.changed, ["a.txt"]);
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("1024").unwrap(), 1024);
    assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
    assert_eq!(parse_size("20MiB").unwrap(), 20 << 20);
    assert_eq!(parse_size("1G").unwrap(), 1 << 30);
    assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
    assert!(
        parse_size("lots")
            .unwrap_err()
            .to_string()
            .contains("invalid size")
    );
    assert!(parse_size("5XB").is_err());
}

/// Git's ignore rules, with `git ls-files --cached --others --exclude-standard`
/// (what Git itself calls not ignored) as the oracle.
#[test]
fn with_git_rules_the_walk_keeps_exactly_what_git_does_not_ignore() {
    let repo = tree(&[
        (".gitignore", "target/\n*.log\n/build\n!keep.log\n"),
        ("deploy/app.yaml", "kind: A\n"),
        ("deploy/debug.log", "x"),
        ("deploy/keep.log", "x"),
        ("deploy/.gitignore", "local-*.yaml\n!local-shared.yaml\n"),
        ("deploy/local-mine.yaml", "kind: B\n"),
        ("deploy/local-shared.yaml", "kind: C\n"),
        ("target/debug/app", "x"),
        ("target/forced.yaml", "kind: D\n"),
        ("build/out.yaml", "kind: E\n"),
        ("src/build/gen.yaml", "kind: F\n"),
        ("notes/private.yaml", "kind: G\n"),
        ("node_modules/a/index.js", "x"),
    ]);
    let root = fs::canonicalize(repo.path()).unwrap();
    git(&root, &["init", "-q"]);
    fs::write(root.join(".git/info/exclude"), "notes/\nnode_modules\n").unwrap();
    // Tracked although ignored: Git keeps it, so must we.
    git(&root, &["add", "-f", "target/forced.yaml"]);
    git(&root, &["add", "deploy/app.yaml"]);
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .unwrap();
    let mut want: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with(".gitignore"))
        .map(String::from)
        .collect();
    want.sort();
    let options = WalkOptions {
        git_ignore: true,
        ..Default::default()
    };
    let mut got: Vec<String> = walk(&root, &options)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| e.path)
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(got.contains(&"target/forced.yaml".to_string()));
    // Without Git's rules (build/push: Flux's semantics) they are all there.
    let all = paths(&root, &WalkOptions::default());
    assert!(all.contains(&"target/debug/app".to_string()), "{all:?}");
    // The watcher's single-path view agrees.
    let rules = IgnoreRules::for_walk(&root, &options).unwrap();
    assert!(rules.ignores(Path::new("target/debug/app"), false));
    assert!(!rules.ignores(Path::new("target/forced.yaml"), false));
    assert!(rules.ignores(Path::new("deploy/local-mine.yaml"), false));
    assert!(!rules.ignores(Path::new("deploy/local-shared.yaml"), false));
    assert!(rules.ignores(Path::new("notes"), true));
}

#[test]
fn only_keeps_the_listed_paths_and_the_directories_leading_to_them() {
    let repo = tree(&[
        ("deploy/a.yaml", "kind: A\n"),
        ("deploy/sub/b.yaml", "kind: B\n"),
        ("base/c.yaml", "kind: C\n"),
        ("config/app.conf", "x"),
        ("config/other.conf", "x"),
        ("src/main.rs", "x"),
        ("README.md", "x"),
    ]);
    let options = WalkOptions {
        only: Some(vec![
            "deploy".into(),
            "base".into(),
            "config/app.conf".into(),
        ]),
        ..Default::default()
    };
    assert_eq!(
        paths(repo.path(), &options),
        [
            ".",
            "base",
            "base/c.yaml",
            "config",
            "config/app.conf",
            "deploy",
            "deploy/a.yaml",
            "deploy/sub",
            "deploy/sub/b.yaml"
        ]
    );
    assert_eq!(scope(Some(&["deploy".into()]), "deploy/x"), Scope::Inside);
    assert_eq!(scope(Some(&["a/b".into()]), "a"), Scope::Above);
    assert_eq!(scope(Some(&["a/b".into()]), "ab"), Scope::Outside);
    assert_eq!(scope(None, "anything"), Scope::Inside);
}

#[test]
fn control_characters_in_names_are_refused_unless_ignored() {
    let dir = tree(&[
        ("cm.yaml", "kind: ConfigMap\n"),
        ("a\tb.yaml", "kind: ConfigMap\n"),
    ]);
    let err = walk(dir.path(), &WalkOptions::default()).unwrap_err();
    assert!(matches!(err, ArtifactError::ControlCharName(_)), "{err}");
    assert!(err.to_string().contains("a\\tb.yaml"), "{err}");
    let options = WalkOptions {
        ignore: vec!["a*b.yaml".into()],
        ..Default::default()
    };
    assert!(walk(dir.path(), &options).is_ok());
}

#[test]
fn the_filesystem_root_and_the_home_directory_are_too_broad() {
    assert!(matches!(
        refuse_too_broad(Path::new("/")),
        Err(ArtifactError::TooBroad { .. })
    ));
    let dir = tree(&[("cm.yaml", "kind: ConfigMap\n")]);
    assert!(refuse_too_broad(&canonical_root(dir.path()).unwrap()).is_ok());
    if let Some(home) = std::env::var_os("HOME").and_then(|h| fs::canonicalize(h).ok()) {
        let err = refuse_too_broad(&home).unwrap_err();
        assert!(err.to_string().contains("home directory"), "{err}");
    }
}

#[test]
fn keep_beats_gits_rules_but_not_sourceignore_and_names_the_rule() {
    let repo = tree(&[
        (".gitignore", ".env\nsecrets/\n"),
        ("deploy/.env", "PASSWORD=x\n"),
        ("deploy/other.env", "x\n"),
        ("secrets/db.env", "x\n"),
        ("secrets/unused.env", "x\n"),
        ("deploy/.sourceignore", "drafts/\n"),
        ("deploy/drafts/d.yaml", "kind: D\n"),
    ]);
    let root = fs::canonicalize(repo.path()).unwrap();
    git(&root, &["init", "-q"]);
    let plain = WalkOptions {
        git_ignore: true,
        ..Default::default()
    };
    let dropped = paths(&root, &plain);
    assert!(!dropped.contains(&"deploy/.env".to_string()), "{dropped:?}");
    let keep = WalkOptions {
        keep: vec!["deploy/.env".into(), "secrets/db.env".into()],
        ..plain.clone()
    };
    let kept = paths(&root, &keep);
    for want in [
        "deploy/.env",
        "secrets",
        "secrets/db.env",
        "deploy/other.env",
    ] {
        assert!(kept.contains(&want.to_string()), "{want} in {kept:?}");
    }
    // The ignored directory leading to a kept file brings nothing else.
    assert!(
        !kept.contains(&"secrets/unused.env".to_string()),
        "{kept:?}"
    );
    // The watcher agrees.
    let rules = IgnoreRules::for_walk(&root, &keep).unwrap();
    assert!(!rules.ignores(Path::new("deploy/.env"), false));
    assert!(rules.ignores(Path::new("secrets/unused.env"), false));
    assert_eq!(rules.rule_for(Path::new("deploy/.env"), false), None);
    // Why each is left out, in words.
    let plain_rules = IgnoreRules::for_walk(&root, &plain).unwrap();
    assert_eq!(
        plain_rules.rule_for(Path::new("deploy/.env"), false),
        Some(IgnoredBy {
            path: "deploy/.env".into(),
            rule: "`.env` in .gitignore".into(),
            by: IgnoredKind::Git,
        })
    );
    assert_eq!(
        plain_rules.rule_for(Path::new("secrets/db.env"), false),
        Some(IgnoredBy {
            path: "secrets".into(),
            rule: "`secrets/` in .gitignore".into(),
            by: IgnoredKind::Git,
        })
    );
    let sourceignored = WalkOptions {
        keep: vec!["deploy/drafts/d.yaml".into()],
        ignore: vec!["*.env".into()],
        ..plain
    };
    let rules = IgnoreRules::for_walk(&root, &sourceignored).unwrap();
    assert_eq!(
        rules.rule_for(Path::new("deploy/drafts/d.yaml"), false),
        Some(IgnoredBy {
            path: "deploy/drafts".into(),
            rule: "`drafts/` in deploy/.sourceignore".into(),
            by: IgnoredKind::SourceIgnore,
        })
    );
    assert_eq!(
        rules
            .rule_for(Path::new("deploy/other.env"), false)
            .map(|b| (b.rule, b.by)),
        Some(("`*.env` (--ignore)".into(), IgnoredKind::Flag))
    );
    assert_eq!(
        rules.rule_for(Path::new("logo.png"), false).map(|b| b.by),
        Some(IgnoredKind::Default)
    );
}
