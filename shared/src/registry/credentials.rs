//! Registry credentials: `--creds USER:PASSWORD`, else the Docker config
//! (`docker login`) and the credential helpers it names. The password is
//! never printed: `Debug` redacts it and only the client reads it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use oci_client::secrets::RegistryAuth;

use super::RegistryError;

/// Registry credentials. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:<redacted>)", self.username)
    }
}

impl FromStr for Credentials {
    type Err = RegistryError;

    /// `USER:PASSWORD`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(RegistryError::BadCreds),
        }
    }
}

/// The Docker config's credentials for a registry (running its credential
/// helper if it names one), if any. Sessions call this once, not per push.
pub fn docker_config_credentials(registry: &str) -> Option<Credentials> {
    match docker_config_auth(registry) {
        RegistryAuth::Basic(username, password) => Some(Credentials { username, password }),
        _ => None,
    }
}

fn docker_config_auth(registry: &str) -> RegistryAuth {
    // Docker Hub's credentials are stored under its index URL.
    let key = match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    };
    let credential = docker_config_file(|name| std::env::var_os(name), cfg!(windows))
        .and_then(|path| std::fs::File::open(path).ok())
        .map(|file| {
            docker_credential::get_credential_from_reader(std::io::BufReader::new(file), key)
        });
    match credential {
        Some(Ok(docker_credential::DockerCredential::UsernamePassword(u, p))) => {
            RegistryAuth::Basic(u, p)
        }
        Some(Ok(docker_credential::DockerCredential::IdentityToken(_))) => {
            tracing::debug!(
                registry,
                "identity tokens are not supported; pulling anonymously"
            );
            RegistryAuth::Anonymous
        }
        Some(Err(_)) | None => RegistryAuth::Anonymous,
    }
}

/// Where the Docker CLI keeps its config: `$DOCKER_CONFIG/config.json`, else
/// `.docker/config.json` in the home directory, which on Windows is
/// `%USERPROFILE%` (the `docker_credential` crate only knows `$HOME`, which
/// Windows does not set). Credential helpers it names are run as
/// `docker-credential-NAME`, which Windows resolves to `….exe` on `PATH`.
fn docker_config_file(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    windows: bool,
) -> Option<std::path::PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    let home = if windows {
        // Git Bash and Cygwin set HOME; the Docker CLI itself reads USERPROFILE.
        set("USERPROFILE").or_else(|| set("HOME"))
    } else {
        set("HOME")
    }?;
    Some(Path::new(&home).join(".docker").join("config.json"))
}

/// How a client authenticates to `registry`: with `creds` when given,
/// otherwise as the Docker config says (anonymously when it says nothing).
pub(super) fn registry_auth(creds: Option<&Credentials>, registry: &str) -> RegistryAuth {
    match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => docker_config_auth(registry),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_is_found_where_the_docker_cli_keeps_it_on_each_os() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let file = |home: &str| Path::new(home).join(".docker").join("config.json");
        let unix = env(&[("HOME", "/home/ann"), ("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(docker_config_file(unix, false), Some(file("/home/ann")));
        let windows = env(&[("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(
            docker_config_file(windows, true),
            Some(file("C:\\Users\\ann"))
        );
        // Git Bash sets HOME too: USERPROFILE still wins, as for the Docker CLI.
        let git_bash = env(&[("HOME", "/c/Users/ann"), ("USERPROFILE", "C:\\Users\\ann")]);
        assert_eq!(
            docker_config_file(git_bash, true),
            Some(file("C:\\Users\\ann"))
        );
        let only_home = env(&[("HOME", "D:\\ann"), ("USERPROFILE", "")]);
        assert_eq!(docker_config_file(only_home, true), Some(file("D:\\ann")));
        let docker_config = env(&[("DOCKER_CONFIG", "/etc/ci"), ("HOME", "/home/ann")]);
        for windows in [false, true] {
            assert_eq!(
                docker_config_file(docker_config, windows),
                Some(Path::new("/etc/ci").join("config.json"))
            );
        }
        assert_eq!(docker_config_file(env(&[]), false), None);
    }

    #[test]
    fn credentials_parse_and_never_print_the_secret() {
        let c: Credentials = "bob:s3cr3t".parse().unwrap();
        assert_eq!(c.username, "bob");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!("bob".parse::<Credentials>().is_err());
        assert!(":x".parse::<Credentials>().is_err());
        let e = "bob".parse::<Credentials>().unwrap_err().to_string();
        assert!(!e.contains("bob"));
    }
}
