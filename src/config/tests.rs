use super::*;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    service: ServiceArgs,
}

fn cli(args: &[&str]) -> ServiceArgs {
    use clap::Parser;
    Cli::try_parse_from(std::iter::once("ccr-syncer").chain(args.iter().copied()))
        .unwrap()
        .service
}

#[test]
fn defaults() {
    let c = Config::merge(FileConfig::default(), &cli(&[]), None).unwrap();
    assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 9190));
    assert!(matches!(c.store, StoreConfig::Sqlite { ref dir } if dir == Path::new("db")));
    assert!(c.auth_token.is_none());
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
}

#[test]
fn flags_override_the_file() {
    let file: FileConfig = toml::from_str(
        "port = 1000\nhost = \"0.0.0.0\"\n[store]\ntype = \"mysql\"\nhost = \"db1\"\npassword = \"f\"\n",
    )
    .unwrap();
    let c = Config::merge(file, &cli(&["--port", "2000", "--db-host", "db2"]), None).unwrap();
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 2000));
    match c.store {
        StoreConfig::Mysql {
            host,
            port,
            password,
            database,
            ..
        } => {
            assert_eq!(
                (host.as_str(), port, database.as_str()),
                ("db2", 3306, "ccr")
            );
            assert_eq!(password.expose(), "f");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_bad_settings() {
    let unknown = toml::from_str::<FileConfig>("prot = 1\n")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("prot"), "{unknown}");
    let bad_type: FileConfig = toml::from_str("[store]\ntype = \"redis\"\n").unwrap();
    let err = Config::merge(bad_type, &cli(&[]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("redis"), "{err}");
    let err = Config::merge(FileConfig::default(), &cli(&["--log-level", "loud"]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("loud"), "{err}");
    for (text, field) in [
        ("[full_sync]\nconnections = 0\n", "full_sync.connections"),
        ("[full_sync]\nconnections = 65\n", "full_sync.connections"),
        ("[full_sync]\nchunk_rows = 0\n", "full_sync.chunk_rows"),
        (
            "[full_sync]\nstatement_bytes = 100\n",
            "full_sync.statement_bytes",
        ),
        ("[full_sync]\nchunk = 5\n", "chunk"),
        (
            "[incremental]\napply_connections = 0\n",
            "incremental.apply_connections",
        ),
    ] {
        let err = toml::from_str::<FileConfig>(text)
            .map_err(|e| e.to_string())
            .and_then(|f| Config::merge(f, &cli(&[]), None).map_err(|e| e.to_string()))
            .unwrap_err();
        assert!(err.contains(field), "{text}: {err}");
    }
}

#[test]
fn the_shipped_config_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
    let file = read_file(&path, true).unwrap();
    let config = Config::merge(file, &cli(&[]), None).unwrap();
    // The file documents the defaults; they must be the code's.
    assert_eq!(config.full_sync, FullSyncSettings::default());
}

#[test]
fn tls_and_key_settings() {
    let file: FileConfig = toml::from_str(
        "[tls]\ndefault_mode = \"verify_ca\"\nminimum_mode = \"required\"\n\
         [store]\ntype = \"mysql\"\ntls_mode = \"required\"\n",
    )
    .unwrap();
    let c = Config::merge(file, &cli(&[]), None).unwrap();
    assert_eq!(c.tls.default_mode, TlsMode::VerifyCa);
    assert_eq!(c.tls.minimum_mode, TlsMode::Required);
    assert!(c.tls.check("src.tls.mode", TlsMode::Preferred).is_err());
    let file: FileConfig = toml::from_str("[tls]\nminimum_mode = \"required\"\n").unwrap();
    let strict = Config::merge(file, &cli(&[]), None).unwrap();
    assert_eq!(strict.tls.default_mode, TlsMode::Required);
    match c.store {
        StoreConfig::Mysql { tls, .. } => assert_eq!(tls.mode, TlsMode::Required),
        other => panic!("{other:?}"),
    }
    let c = Config::merge(
        FileConfig::default(),
        &cli(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]),
        None,
    )
    .unwrap();
    assert_eq!(c.api_tls.unwrap().cert, Path::new("c.pem"));
    for (text, args, want) in [
        ("", &["--tls-cert", "c.pem"][..], "go together"),
        (
            "[tls]\ndefault_mode = \"loose\"\n",
            &[][..],
            "tls.default_mode",
        ),
        (
            "[tls]\ndefault_mode = \"preferred\"\nminimum_mode = \"required\"\n",
            &[][..],
            "below",
        ),
        (
            "",
            &["--db-type", "mysql", "--db-tls-mode", "strict"][..],
            "--db-tls-mode",
        ),
        (
            "[tls]\nminimum_mode = \"required\"\n",
            &["--db-type", "mysql", "--db-tls-mode", "preferred"][..],
            "below tls.minimum_mode required",
        ),
        (
            "",
            &["--previous-secret-key-file", "old.key"][..],
            "needs secret_key_file",
        ),
    ] {
        let file: FileConfig = toml::from_str(text).unwrap();
        let err = Config::merge(file, &cli(args), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{text} {args:?}: {err}");
    }
}

#[test]
fn token_from_environment_wins_and_empty_means_none() {
    let file: FileConfig = toml::from_str("auth_token = \"f\"\n").unwrap();
    let c = Config::merge(file, &cli(&[]), Some("e".into())).unwrap();
    assert_eq!(c.auth_token.unwrap().expose(), "e");
    let file: FileConfig = toml::from_str("auth_token = \"\"\n").unwrap();
    assert!(Config::merge(file, &cli(&[]), None)
        .unwrap()
        .auth_token
        .is_none());
}
