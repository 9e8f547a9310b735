//! `orderflow-nemesis`: randomized faults against a whole deployment on one
//! machine, then a check of everything it recorded (Jepsen's method).
//!
//! It starts a three-node NATS cluster (each node in its own network
//! namespace, so a partition is real), two replicas of each service with R3
//! streams, and the gateway simulator; sends orders at a steady rate with a
//! share of cancellations; injects the faults the seed draws (SIGKILL and
//! restart of any process, SIGTERM rolling restarts, SIGSTOP pauses longer
//! than the ack wait, partitions of a NATS node, gateway outages and
//! slowness); heals everything; lets the run settle; and checks the
//! history (`check`). It prints the faults, the counts and each invariant
//! with its violations, writes the same as JSON, and exits 1 on any
//! violation. docs/reliability.md explains a run and its report.

mod check;
mod http;
mod load;
mod net;
mod nodes;
mod process;
mod schedule;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use clap::Parser;
use orderflow_proto::{
    admin::v1::dead_letter_service_client::DeadLetterServiceClient,
    order::v1::order_service_client::OrderServiceClient,
};
use schedule::{Fault, Planned, Service, Shape, Target};
use serde::Serialize;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::process::Proc;

/// Randomized faults against orderflow, then a check of the whole history.
#[derive(Debug, Parser)]
#[command(name = "orderflow-nemesis", version)]
struct Cli {
    /// How long faults are injected, in seconds.
    #[arg(long, default_value_t = 90)]
    seconds: u64,
    /// The seed of the fault schedule and of the orders: the same seed
    /// replays the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Orders per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Fraction of acknowledged orders cancelled soon after.
    #[arg(long, default_value_t = 0.2)]
    cancel_share: f64,
    /// Fraction of orders above the gateway's decline threshold.
    #[arg(long, default_value_t = 0.08)]
    decline_share: f64,
    /// After the faults, how long the run may take to settle before the
    /// last check counts: longer than a message's ten deliveries take with
    /// their doubling delays (about four minutes).
    #[arg(long, default_value_t = 300)]
    settle_secs: u64,
    /// Where the logs, the history and the report go (default
    /// `target/nemesis/seed-<seed>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where the binaries are (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Sample RSS and open file descriptors of every process, and
    /// CreateOrder p99, once a minute (for soaks).
    #[arg(long)]
    sample: bool,
}

const NODES: usize = 3;
const REPLICAS: usize = 2;
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Why a run could not be carried out (as opposed to a violation).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Read(#[from] check::ReadError),
    #[error("{0}")]
    Setup(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // On SIGINT or SIGTERM the run is dropped, and with it every child
    // process (killed on drop) and the network namespaces (removed on
    // drop), so an interrupted run leaves nothing running.
    let ran = tokio::select! {
        ran = run(cli) => ran,
        () = interrupted() => Err(RunError::Setup(String::from("interrupted"))),
    };
    match ran {
        Ok(findings) if findings.violations() == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            eprintln!("orderflow-nemesis: {error}");
            ExitCode::from(2)
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The fault log: every fault and heal, with its time, on stdout and in
/// `faults.jsonl`.
struct FaultLog {
    started: Instant,
    file: Mutex<File>,
    executed: Mutex<BTreeMap<&'static str, usize>>,
    sigterm_exits: Mutex<Vec<(String, Option<i32>)>>,
}

impl FaultLog {
    fn record(&self, event: &str, target: &str, detail: &str) {
        let t = self.started.elapsed().as_secs_f64();
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        println!("[{t:8.3}s] {event:<6} {target:<10} {detail}");
        let line = serde_json::json!({
            "t": t, "time": now, "event": event, "target": target, "detail": detail,
        });
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
    }

    fn count(&self, kind: &'static str) {
        *self
            .executed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_default() += 1;
    }
}

/// Everything the faults act on.
struct World {
    net: net::Net,
    procs: HashMap<Target, AsyncMutex<Proc>>,
    /// gRPC endpoints of the service replicas.
    endpoints: HashMap<Target, String>,
    gateway_url: String,
    log: FaultLog,
}

impl World {
    fn proc(&self, target: Target) -> &AsyncMutex<Proc> {
        // Every target a schedule names was created in `run`.
        &self.procs[&target]
    }

    async fn restart(&self, target: Target) {
        let mut proc = self.proc(target).lock().await;
        if let Err(error) = proc.start() {
            self.log
                .record("error", &target.to_string(), &error.to_string());
        }
    }

    async fn control(&self, body: serde_json::Value) {
        let url = format!("{}/control", self.gateway_url);
        match http::post_json(&url, &body).await {
            Ok((200, _)) => {}
            Ok((status, answer)) => self.log.record(
                "note",
                "gateway",
                &format!(
                    "control {body} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            ),
            Err(error) => self.log.record(
                "note",
                "gateway",
                &format!("control {body} not applied: {error}"),
            ),
        }
    }
}

/// Whether `fault` impairs a NATS node.
fn impairs_nats(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Kill {
            target: Target::Nats(_),
            ..
        } | Fault::Pause {
            target: Target::Nats(_),
            ..
        } | Fault::Partition { .. }
    )
}

async fn execute(world: Arc<World>, fault: Fault) {
    let log = &world.log;
    // A node restarted or healed a moment ago may still be catching up;
    // impairing another one then would leave the streams short of a quorum,
    // which no fault here is meant to do. So a NATS fault waits (at most a
    // minute) until every node says it is healthy.
    if impairs_nats(&fault) {
        let waited = Instant::now();
        let mut whole = false;
        while waited.elapsed() < Duration::from_secs(60) {
            let mut all = true;
            for i in 0..NODES {
                all &= nodes::healthy(&world.net, i).await;
            }
            if all {
                whole = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let waited = waited.elapsed();
        if !whole {
            log.record(
                "note",
                "-",
                "the NATS cluster is not whole after 60 s; faulting anyway",
            );
        } else if waited > Duration::from_secs(1) {
            log.record(
                "note",
                "-",
                &format!("waited {waited:.1?} for the NATS cluster to be whole"),
            );
        }
    }
    log.count(fault.kind());
    match fault {
        Fault::Kill { target, down } => {
            log.record(
                "fault",
                &target.to_string(),
                &format!("SIGKILL, down {down:?}"),
            );
            world.proc(target).lock().await.kill().await;
            tokio::time::sleep(down).await;
            world.restart(target).await;
            log.record("heal", &target.to_string(), "restarted");
        }
        Fault::Pause { target, paused } => {
            log.record(
                "fault",
                &target.to_string(),
                &format!("SIGSTOP for {paused:?}"),
            );
            world.proc(target).lock().await.pause();
            tokio::time::sleep(paused).await;
            world.proc(target).lock().await.resume();
            log.record("heal", &target.to_string(), "SIGCONT");
        }
        Fault::Partition { node, cut } => {
            let name = Target::Nats(node).to_string();
            match world.net.partition(node) {
                Ok(()) => log.record("fault", &name, &format!("partitioned for {cut:?}")),
                Err(error) => log.record("error", &name, &error.to_string()),
            }
            tokio::time::sleep(cut).await;
            match world.net.heal(node) {
                Ok(()) => log.record("heal", &name, "partition healed"),
                Err(error) => log.record("error", &name, &error.to_string()),
            }
        }
        Fault::Rolling { service } => {
            for i in 0..REPLICAS {
                let target = match service {
                    Service::Order => Target::Order(i),
                    Service::Payment => Target::Payment(i),
                };
                let name = target.to_string();
                log.record("fault", &name, "SIGTERM (rolling restart)");
                let code = world
                    .proc(target)
                    .lock()
                    .await
                    .terminate(Duration::from_secs(30))
                    .await;
                log.sigterm_exits
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((name.clone(), code));
                log.record("heal", &name, &format!("exited {code:?}; restarting"));
                world.restart(target).await;
                if !serving(&world.endpoints[&target], Duration::from_secs(30)).await {
                    log.record("note", &name, "not SERVING 30 s after its restart");
                }
            }
        }
        Fault::GatewayOutage { outage } => {
            log.record("fault", "gateway", &format!("outage for {outage:?}"));
            world.control(serde_json::json!({"outage": true})).await;
            tokio::time::sleep(outage).await;
            world.control(serde_json::json!({"outage": false})).await;
            log.record("heal", "gateway", "outage over");
        }
        Fault::GatewaySlow { latency, slow } => {
            log.record(
                "fault",
                "gateway",
                &format!("latency {latency:?} for {slow:?}"),
            );
            let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
            world.control(serde_json::json!({"latency_ms": ms})).await;
            tokio::time::sleep(slow).await;
            world.control(serde_json::json!({"latency_ms": 0})).await;
            log.record("heal", "gateway", "latency back to 0");
        }
    }
}

/// Whether the gRPC server at `endpoint` reports SERVING within `limit`.
async fn serving(endpoint: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(endpoint) = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            && let Ok(Ok(channel)) =
                tokio::time::timeout(Duration::from_secs(2), endpoint.connect()).await
        {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                health.check(HealthCheckRequest {
                    service: String::new(),
                }),
            )
            .await;
            if let Ok(Ok(answer)) = answer
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl AsyncFnMut() -> bool,
) -> Result<(), RunError> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(RunError::Setup(format!(
        "{what} not ready within {limit:?}"
    )))
}

fn free_port() -> Result<u16, RunError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn binary(dir: &Path, name: &str) -> Result<String, RunError> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path.display().to_string())
    } else {
        Err(RunError::Setup(format!(
            "{} is missing: build the workspace's binaries first (scripts/nemesis.sh does)",
            path.display()
        )))
    }
}

/// The report written as `report.json`.
#[derive(Serialize)]
struct Report<'a> {
    seed: u64,
    seconds: u64,
    rate: f64,
    schedule: &'a [Planned],
    faults_executed: BTreeMap<&'static str, usize>,
    sigterm_exits: Vec<(String, Option<i32>)>,
    settled_after_secs: f64,
    findings: &'a check::Findings,
    samples: &'a [Sample],
    /// CreateOrder p99 (ms) of the calls sent in each minute of the load.
    create_p99_by_minute: Vec<(u64, Option<f64>)>,
    /// Last sample ÷ first, per process and figure (RSS, open fds), and the
    /// last minute's CreateOrder p99 ÷ the first's: drift shows as a ratio
    /// well above 1.
    drift: BTreeMap<String, f64>,
}

/// One minute's sample of a soak.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    minute: u64,
    /// RSS in KiB and open file descriptors, per process.
    processes: BTreeMap<String, (u64, usize)>,
}

async fn run(cli: Cli) -> Result<check::Findings, RunError> {
    let bin_dir = match cli.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| RunError::Setup(String::from("cannot tell where this binary is")))?,
    };
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/nemesis/seed-{}", cli.seed)));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let (order_bin, payment_bin, gateway_bin) = (
        binary(&bin_dir, "order-service")?,
        binary(&bin_dir, "payment-service")?,
        binary(&bin_dir, "gateway-sim")?,
    );
    let shape = Shape {
        nodes: NODES,
        replicas: REPLICAS,
        ack_wait: ACK_WAIT,
    };
    let plan = schedule::draw(cli.seed, cli.seconds, shape);
    println!(
        "nemesis: seed {}, {} s of faults, {} faults planned, output in {}",
        cli.seed,
        cli.seconds,
        plan.len(),
        out.display()
    );

    let net = net::Net::create(NODES)?;
    let mut procs: HashMap<Target, Proc> = HashMap::new();
    for (i, proc) in nodes::processes(&net, NODES, &out)?.into_iter().enumerate() {
        procs.insert(Target::Nats(i), proc);
    }
    let gateway_port = free_port()?;
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    procs.insert(
        Target::Gateway,
        Proc::new(
            "gateway",
            vec![
                gateway_bin,
                String::from("--addr"),
                format!("127.0.0.1:{gateway_port}"),
                String::from("--data-dir"),
                out.join("gateway").display().to_string(),
                String::from("--seed"),
                cli.seed.to_string(),
            ],
            Vec::new(),
            out.join("gateway.log"),
        ),
    );
    let nats_url = nodes::client_urls(&net, NODES);
    let mut endpoints = HashMap::new();
    for i in 0..REPLICAS {
        for (target, bin, extra) in [
            (Target::Order(i), &order_bin, Vec::new()),
            (
                Target::Payment(i),
                &payment_bin,
                vec![
                    ("GATEWAY_URL", gateway_url.clone()),
                    ("GATEWAY_TIMEOUT_MS", String::from("1000")),
                    ("GATEWAY_BREAKER_OPEN_MS", String::from("2000")),
                ],
            ),
        ] {
            let port = free_port()?;
            let mut env = vec![
                ("NATS_URL", nats_url.clone()),
                ("GRPC_ADDR", format!("127.0.0.1:{port}")),
                ("STREAM_REPLICAS", String::from("3")),
                ("CONSUMER_ACK_WAIT_SECS", ACK_WAIT.as_secs().to_string()),
                ("SHUTDOWN_TIMEOUT_SECS", String::from("10")),
                ("LOG_FORMAT", String::from("json")),
                ("RUST_LOG", String::from("info")),
            ];
            env.extend(extra);
            endpoints.insert(target, format!("http://127.0.0.1:{port}"));
            procs.insert(
                target,
                Proc::new(
                    &target.to_string(),
                    vec![bin.clone()],
                    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                    out.join(format!("{target}.log")),
                ),
            );
        }
    }

    // Start: the cluster, the gateway, then the services.
    for i in 0..NODES {
        procs
            .get_mut(&Target::Nats(i))
            .map(Proc::start)
            .transpose()?;
    }
    wait_for("the NATS cluster", Duration::from_secs(60), async || {
        let mut all = true;
        for i in 0..NODES {
            all &= nodes::healthy(&net, i).await;
        }
        all
    })
    .await?;
    procs
        .get_mut(&Target::Gateway)
        .map(Proc::start)
        .transpose()?;
    let health = format!("{gateway_url}/health");
    wait_for(
        "the gateway simulator",
        Duration::from_secs(30),
        async || matches!(http::get(&health).await, Ok((200, _))),
    )
    .await?;
    for i in 0..REPLICAS {
        for target in [Target::Order(i), Target::Payment(i)] {
            procs.get_mut(&target).map(Proc::start).transpose()?;
        }
    }
    for (target, endpoint) in &endpoints {
        if !serving(endpoint, Duration::from_secs(60)).await {
            return Err(RunError::Setup(format!("{target} not SERVING within 60 s")));
        }
    }

    let world = Arc::new(World {
        net,
        procs: procs
            .into_iter()
            .map(|(t, p)| (t, AsyncMutex::new(p)))
            .collect(),
        endpoints: endpoints.clone(),
        gateway_url: gateway_url.clone(),
        log: FaultLog {
            started: Instant::now(),
            file: Mutex::new(File::create(out.join("faults.jsonl"))?),
            executed: Mutex::default(),
            sigterm_exits: Mutex::default(),
        },
    });
    world
        .log
        .record("start", "-", "all processes SERVING; load and faults begin");

    // Load and faults.
    let stop_load = CancellationToken::new();
    let order_endpoints: Vec<String> = (0..REPLICAS)
        .map(|i| endpoints[&Target::Order(i)].clone())
        .collect();
    let load = tokio::spawn(load::run(
        order_endpoints,
        cli.seed,
        load::Shape {
            rate: cli.rate,
            cancel_share: cli.cancel_share,
            decline_share: cli.decline_share,
        },
        stop_load.clone(),
    ));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = cli.sample.then(|| {
        let (world, samples) = (world.clone(), samples.clone());
        tokio::spawn(async move {
            let mut minute = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                minute += 1;
                let sample = sample(&world, minute).await;
                println!(
                    "sample: {}",
                    serde_json::to_string(&sample).unwrap_or_default()
                );
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sample);
            }
        })
    });
    let started = Instant::now();
    let mut faults = tokio::task::JoinSet::new();
    for planned in &plan {
        let wait = planned.at.saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        faults.spawn(execute(world.clone(), planned.fault.clone()));
    }
    let end = Duration::from_secs(cli.seconds).saturating_sub(started.elapsed());
    tokio::time::sleep(end).await;
    while faults.join_next().await.is_some() {}
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    // Heal anything left impaired, and make sure every process runs.
    for i in 0..NODES {
        world.net.heal(i)?;
    }
    for (target, proc) in &world.procs {
        let mut proc = proc.lock().await;
        if proc.is_paused() {
            proc.resume();
        }
        if !proc.is_running() {
            world
                .log
                .record("heal", &target.to_string(), "was not running; restarted");
            proc.start()?;
        }
    }
    world
        .control(serde_json::json!({"outage": false, "latency_ms": 0}))
        .await;
    stop_load.cancel();
    let history = load
        .await
        .map_err(|e| RunError::Setup(format!("the load task failed: {e}")))?
        .map_err(|e| RunError::Setup(format!("the load could not start: {e}")))?;
    world.log.record(
        "stop",
        "-",
        &format!(
            "faults over after {:.1} s; settling",
            started.elapsed().as_secs_f64()
        ),
    );
    serde_json::to_writer_pretty(File::create(out.join("history.json"))?, &history)
        .map_err(|e| RunError::Setup(e.to_string()))?;

    // Settle: the verdict is the first of two checks in a row that find no
    // violation, see the same counts, and find no durable consumer holding
    // work (a quiet system, not a snapshot of a moving one); or the last
    // check when the settle time is over.
    let settle_started = Instant::now();
    let mut previous: Option<check::Fingerprint> = None;
    let mut findings = loop {
        let findings = check_once(&world, &nats_url, &history).await;
        let over = settle_started.elapsed() >= Duration::from_secs(cli.settle_secs);
        match findings {
            Ok(findings) => {
                let clean = findings.violations() == 0 && findings.fingerprint.outstanding == 0;
                let quiet = previous.as_ref() == Some(&findings.fingerprint);
                if (clean && quiet) || over {
                    break findings;
                }
                previous = clean.then(|| findings.fingerprint.clone());
            }
            Err(error) if over => return Err(error),
            Err(error) => {
                world
                    .log
                    .record("note", "-", &format!("check not possible yet: {error}"))
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    if findings.creates_acked == 0 || findings.events == 0 {
        return Err(RunError::Setup(String::from(
            "no CreateOrder was acknowledged: the run checked nothing",
        )));
    }
    let executed = world
        .log
        .executed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let sigterm_exits = world
        .log
        .sigterm_exits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut exits = check::Invariant::new("every SIGTERM exits 0 within 30 s");
    for (name, code) in &sigterm_exits {
        exits.check(*code == Some(0), || format!("{name} exited {code:?}"));
    }
    findings.invariants.push(exits);
    let samples = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let create_p99_by_minute = p99_by_minute(&history);
    let drift = drift(&samples, &create_p99_by_minute);
    let report = Report {
        seed: cli.seed,
        seconds: cli.seconds,
        rate: cli.rate,
        schedule: &plan,
        faults_executed: executed.clone(),
        sigterm_exits: sigterm_exits.clone(),
        settled_after_secs: settle_started.elapsed().as_secs_f64(),
        findings: &findings,
        samples: &samples,
        create_p99_by_minute,
        drift,
    };
    serde_json::to_writer_pretty(File::create(out.join("report.json"))?, &report)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    print_table(&report);
    // Stop everything gracefully so the logs end cleanly.
    for proc in world.procs.values() {
        proc.lock().await.terminate(Duration::from_secs(15)).await;
    }
    Ok(findings)
}

async fn check_once(
    world: &World,
    nats_url: &str,
    history: &load::History,
) -> Result<check::Findings, RunError> {
    let servers = nats_url
        .split(',')
        .map(str::parse::<async_nats::ServerAddr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RunError::Setup(format!("bad NATS URL {nats_url}: {e}")))?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|e| RunError::Setup(format!("cannot connect to NATS to check: {e}")))?;
    let js = async_nats::jetstream::new(client);
    let mut channels = Vec::new();
    for i in 0..REPLICAS {
        let endpoint =
            tonic::transport::Endpoint::from_shared(world.endpoints[&Target::Order(i)].clone())
                .map_err(|e| RunError::Setup(e.to_string()))?
                .timeout(Duration::from_secs(10));
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| RunError::Setup(format!("cannot reach order-{i} to check: {e}")))?,
        );
    }
    let admin = DeadLetterServiceClient::new(channels[0].clone());
    let findings = check::check(
        check::Sources {
            js: &js,
            orders: channels.into_iter().map(OrderServiceClient::new).collect(),
            admin,
            gateway: &world.gateway_url,
        },
        history,
    )
    .await?;
    Ok(findings)
}

async fn sample(world: &World, minute: u64) -> Sample {
    let mut processes = BTreeMap::new();
    for (target, proc) in &world.procs {
        if let Some(pid) = proc.lock().await.pid() {
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .unwrap_or(0);
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0);
            processes.insert(target.to_string(), (rss, fds));
        }
    }
    Sample { minute, processes }
}

fn p99_by_minute(history: &load::History) -> Vec<(u64, Option<f64>)> {
    let mut minutes: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for create in &history.creates {
        if let Some(latency) = create.latency_ms {
            // Truncation is the point: the minute the call was sent in.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let minute = (create.sent_at / 60.0) as u64;
            minutes.entry(minute).or_default().push(latency);
        }
    }
    minutes
        .into_iter()
        .map(|(minute, mut latencies)| (minute, load::p99(&mut latencies)))
        .collect()
}

fn drift(samples: &[Sample], p99s: &[(u64, Option<f64>)]) -> BTreeMap<String, f64> {
    let mut drift = BTreeMap::new();
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        for (name, (rss, fds)) in &last.processes {
            if let Some((rss0, fds0)) = first.processes.get(name) {
                #[allow(clippy::cast_precision_loss)]
                let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
                drift.insert(format!("{name} rss"), ratio(*rss, *rss0));
                drift.insert(format!("{name} fds"), ratio(*fds as u64, *fds0 as u64));
            }
        }
    }
    let known: Vec<f64> = p99s.iter().filter_map(|(_, p)| *p).collect();
    if let (Some(first), Some(last)) = (known.first(), known.last()) {
        drift.insert(String::from("CreateOrder p99"), last / first.max(0.001));
    }
    drift
}

fn print_table(report: &Report<'_>) {
    let f = report.findings;
    println!(
        "\n== nemesis report: seed {}, {} s of faults ==",
        report.seed, report.seconds
    );
    println!("faults injected:");
    for (kind, n) in &report.faults_executed {
        println!("  {kind:<18} {n:>5}");
    }
    let bad_exits = report
        .sigterm_exits
        .iter()
        .filter(|(_, code)| *code != Some(0))
        .count();
    println!(
        "  SIGTERM exits     {:>5} ({bad_exits} not 0)",
        report.sigterm_exits.len()
    );
    println!(
        "orders: {} CreateOrder acknowledged, {} not; {} CancelOrder acknowledged, {} refused (final), {} not answered",
        f.creates_acked, f.creates_unacked, f.cancels_acked, f.cancels_refused, f.cancels_unacked
    );
    println!("  by final status: {:?}", f.orders_by_status);
    println!(
        "ledger: {} charges, {} declines, {} refunds; {} events; {} dead letters",
        f.charges, f.declines, f.refunds, f.events, f.dead_letters
    );
    for letter in &f.dead_letter_reasons {
        println!("  dead letter {letter}");
    }
    println!("settled after {:.1} s", report.settled_after_secs);
    let p99s: Vec<String> = report
        .create_p99_by_minute
        .iter()
        .map(|(m, p)| {
            format!(
                "{m}: {}",
                p.map_or_else(|| String::from("-"), |p| format!("{p:.0} ms"))
            )
        })
        .collect();
    println!("CreateOrder p99 by minute: {}", p99s.join(", "));
    if !report.samples.is_empty() {
        println!("drift (last ÷ first):");
        for (what, ratio) in &report.drift {
            println!("  {what:<24} {ratio:>6.2}");
        }
    }
    println!("{:<82} {:>8} {:>10}", "invariant", "checked", "violations");
    for invariant in &f.invariants {
        println!(
            "{:<82} {:>8} {:>10}",
            invariant.name, invariant.checked, invariant.violations
        );
        for example in &invariant.examples {
            println!("    {example}");
        }
    }
    println!(
        "{}",
        if f.violations() == 0 {
            "PASS: no violation"
        } else {
            "FAIL: violations above"
        }
    );
}
