//! The listener: accepts connections up to the connection cap, wraps them in TLS when
//! configured, serves HTTP/1.1 with hyper under the configured limits, prunes the report table
//! and the lease log and reclaims expired reboot leases at start and periodically
//! ([`Retention`]), and shuts down gracefully (stop accepting, let
//! open requests finish within a grace period).
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, Limits, Retention};
use crate::db::Db;
use crate::error::Error;
use crate::httpdate;
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::repo::Repo;
use crate::routes;
use crate::sendfile::{self, Pending, SendfileIo};
use crate::timed_io::TimedIo;
use crate::tls;

/// A bound, ready-to-run server.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    retention: Retention,
    tls: Option<TlsAcceptor>,
    http: Arc<http1::Builder>,
}

/// What each connection task needs.
#[derive(Clone)]
struct ConnCtx {
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    http: Arc<http1::Builder>,
    stop: watch::Receiver<bool>,
}

impl Server {
    /// Checks the configuration, opens the database, loads TLS material and binds.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        config.limits.validate()?;
        config.retention.validate()?;
        config.report_rate.validate()?;
        config.leases.validate()?;
        config.failure_budget.validate()?;
        let repo = Repo::open(&config.repo)?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let db = match &config.database_url {
            Some(url) => Db::connect(url, config.database_password_file.as_deref()).await?,
            None => Db::open(&config.data_dir)?,
        };
        prune(&db, &config.retention).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let http = Arc::new(http1_builder(&config.limits));
        let app = Arc::new(App {
            repo,
            db,
            report_token: config.report_token,
            node_auth: config.node_auth,
            seen: crate::replay::Seen::default(),
            admin_token: config.admin_token,
            status_token: config.status_token,
            limits: config.limits,
            metrics: Metrics::default(),
            report_rate: Limiter::new(config.report_rate),
            retention: config.retention.clone(),
            leases: config.leases,
            failure_budget: config.failure_budget,
        });
        Ok(Server {
            listener,
            app,
            retention: config.retention,
            tls,
            http,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether this server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes, then drains open connections for up to
    /// `Limits::shutdown_grace`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let limits = self.app.limits.clone();
        let pruning = tokio::spawn(prune_periodically(self.app.db.clone(), self.retention));
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = ConnCtx {
            app: self.app,
            tls: self.tls,
            http: self.http,
            stop: stop_rx,
        };
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                p = Arc::clone(&slots).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(ctx.clone(), stream, peer, permit));
                }
                Err(e) => accept_failed(&e).await,
            }
        }
        drop(self.listener);
        pruning.abort();
        let _ = stop_tx.send(true);
        drain(&slots, &limits).await;
        Ok(())
    }
}

/// Applies the retention once, logging what it deleted.
async fn prune(db: &Db, retention: &Retention) -> Result<(), crate::error::DbError> {
    let now = httpdate::unix_seconds(SystemTime::now());
    let deleted = db.prune(retention, now).await?;
    if deleted > 0 {
        tracing::info!(deleted, "old reports pruned");
    }
    let expired = db.expire_leases(now).await?;
    if expired > 0 {
        tracing::warn!(expired, "reboot leases expired unreleased");
    }
    let age = i64::try_from(retention.max_age.as_secs()).unwrap_or(i64::MAX);
    db.prune_lease_log(now.saturating_sub(age)).await?;
    db.prune_audit_log(now.saturating_sub(age)).await?;
    db.prune_lease_waiters(now - crate::db::leases::WAITER_FORGOTTEN_AFTER)
        .await?;
    Ok(())
}

/// Applies the retention every `retention.interval`; a failure is logged and retried at the
/// next tick (the server keeps serving).
async fn prune_periodically(db: Db, retention: Retention) {
    let mut ticks = tokio::time::interval(retention.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = prune(&db, &retention).await {
            tracing::warn!(error = %e, "pruning old reports failed");
        }
    }
}

/// Waits until every connection has returned its slot, or the grace period ends.
async fn drain(slots: &Semaphore, limits: &Limits) {
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            open = limits.max_connections - slots.available_permits(),
            "shutdown grace period over; closing remaining connections"
        ),
    }
}

/// Out of file descriptors and similar: log, back off briefly, keep serving.
async fn accept_failed(e: &io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size((limits.max_header_bytes * 2).max(64 * 1024))
        .keep_alive(true)
        .half_close(false)
        // Body buffers go to the I/O as they are, never copied into hyper's buffer: no copy,
        // and what `crate::sendfile` relies on to recognise its placeholders.
        .writev(true);
    b
}

/// One connection, holding its slot until closed.
async fn connection(
    ctx: ConnCtx,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let _open = ctx.app.metrics.connection();
    let _ = stream.set_nodelay(true);
    let stall = ctx.app.limits.write_stall_timeout;
    match ctx.tls.clone() {
        None => {
            let pending = Pending::default();
            let io = TimedIo::new(SendfileIo::new(stream, pending.clone()), stall);
            sendfile::zero_copy(pending, serve_io(ctx, io, peer)).await;
        }
        Some(acceptor) => {
            let handshake = ctx.app.limits.header_read_timeout;
            match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_io(ctx, TimedIo::new(tls, stall), peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(mut ctx: ConnCtx, io: I, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = Arc::clone(&ctx.app);
    let svc = service_fn(move |req| routes::handle(Arc::clone(&app), req));
    let conn = ctx.http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return log_end(r, peer),
        () = stopped(&mut ctx.stop) => {}
    }
    conn.as_mut().graceful_shutdown();
    log_end(conn.await, peer);
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn log_end(result: Result<(), hyper::Error>, peer: SocketAddr) {
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
