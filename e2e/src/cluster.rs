//! Several replicas on one MinIO bucket behind nginx, which balances every
//! request round-robin (a stand-in for a Kubernetes Service): consecutive
//! requests of one upload land on different replicas.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{Minio, Registry, is_live, start_on_free_port, tool};

/// nginx in front of a set of upstream addresses.
#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let servers: String = upstreams
            .iter()
            .map(|u| format!("    server {u} max_fails=0;\n"))
            .collect();
        let d = dir.path().display();
        let conf_path = dir.path().join("nginx.conf");
        let (child, addr) = start_on_free_port(
            "nginx",
            |addr| {
                let conf = format!(
                    r#"worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream berth {{
{servers}  }}
  server {{
    listen {addr};
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header Connection "";
    # A replica that is down refuses the connection before anything was
    # sent, so even a PATCH may safely go to the next one.
    proxy_next_upstream error timeout non_idempotent;
    location / {{ proxy_pass http://berth; }}
    location = /lb-health {{ return 200 "ok"; }}
  }}
}}
"#
                );
                std::fs::write(&conf_path, conf).expect("write nginx.conf");
                Command::new(tool("nginx"))
                    .arg("-c")
                    .arg(&conf_path)
                    .arg("-p")
                    .arg(dir.path())
                    .args(["-g", "daemon off;"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn nginx")
            },
            |addr| is_live(addr, "/lb-health"),
        );
        Self {
            addr,
            child,
            _dir: dir,
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers too (SIGKILL would
    /// orphan them, still holding the test's output pipes).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// MinIO, `n` replicas on one bucket, and nginx in front.
#[derive(Debug)]
pub struct Cluster {
    pub replicas: Vec<Registry>,
    pub lb: Nginx,
    pub bucket: String,
    pub minio: Minio,
}

impl Cluster {
    pub fn start(n: usize) -> Self {
        let minio = Minio::start();
        let bucket = "berth".to_string();
        minio.create_bucket(&bucket);
        let replicas: Vec<Registry> = (0..n)
            .map(|_| Registry::start_s3(&minio, &bucket, "cluster"))
            .collect();
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let lb = Nginx::start(&addrs);
        Self {
            replicas,
            lb,
            bucket,
            minio,
        }
    }

    /// `host:port` of the load balancer, as clients name the registry.
    pub fn host(&self) -> String {
        self.lb.addr.to_string()
    }

    /// Keys in the registry's part of the bucket.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.minio.keys(&self.bucket, &format!("cluster/{prefix}"))
    }
}
