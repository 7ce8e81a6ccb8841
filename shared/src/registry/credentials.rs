//! Registry credentials: `--creds USER:PASSWORD`, else the Docker config
//! (`docker login`) and the credential helpers it names. The password is
//! never printed: `Debug` redacts it and only the client reads it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

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
        Some(Ok(docker_credential::DockerCredential::UsernamePassword(username, password))) => {
            Some(Credentials { username, password })
        }
        Some(Ok(docker_credential::DockerCredential::IdentityToken(_))) => {
            tracing::debug!(
                registry,
                "identity tokens are not supported; pulling anonymously"
            );
            None
        }
        Some(Err(_)) | None => None,
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
pub(super) fn registry_auth(creds: Option<&Credentials>, registry: &str) -> Option<Credentials> {
    creds
        .cloned()
        .or_else(|| docker_config_credentials(registry))
}

impl Credentials {
    /// The `Authorization: Basic …` value. Marked sensitive, so that no
    /// log of the request shows it.
    pub(super) fn basic(&self) -> http::HeaderValue {
        basic_header(&self.username, &self.password)
    }
}

/// `Basic base64(user:password)`, marked sensitive.
pub(super) fn basic_header(username: &str, password: &str) -> http::HeaderValue {
    let encoded = base64(format!("{username}:{password}").as_bytes());
    let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Standard base64 with padding (RFC 4648), as HTTP Basic authentication wants.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_authentication_is_rfc_7617s() {
        // RFC 7617's example.
        assert_eq!(
            basic_header("Aladdin", "open sesame").to_str().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert!(basic_header("a", "b").is_sensitive());
    }

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
