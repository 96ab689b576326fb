//! A fixed-rate (open-loop) HTTP/1.1 load generator for `benches/load.sh`, standing in for
//! wrk2, which Debian does not package.
//!
//! `C` keep-alive connections each send requests on their own schedule (`rate / C` per
//! second, starts staggered), one request in flight per connection, like wrk2. Latency is
//! measured from the time a request was *due* whenever the previous response on its
//! connection arrived after that time (coordinated-omission correction: a stalled server is
//! charged for the queueing it caused), and from the actual send otherwise (so the 1 ms
//! granularity of tokio's timer, or this process waiting for a CPU, is not charged to the
//! server).
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080/openidm/managed/user --rate 5000 \
//!         [--duration 8] [--warmup 1] [--connections 64] [--threads 1] [-H 'Name: value']...
//! ```
//!
//! Prints a human summary and one machine-readable line starting with `RESULT `.
//! Without `--url` (e.g. under a plain `cargo bench` / `cargo test --benches`) it prints its
//! usage and exits 0.

use std::process::ExitCode;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const USAGE: &str = "usage: loadgen --url http://HOST:PORT/PATH --rate REQ_PER_S [--duration S] \
[--warmup S] [--connections N] [--threads N] [-H 'Name: value']...";

/// Responses larger than this are treated as errors (the benchmark bodies are tiny).
const MAX_RESPONSE: usize = 1 << 20;

struct Args {
    host_port: String,
    path: String,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    threads: usize,
    headers: Vec<String>,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut url = None;
    let mut rate = None;
    let mut duration = 8.0;
    let mut warmup = 1.0;
    let mut connections = 64;
    let mut threads = 1;
    let mut headers = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            // Added by `cargo bench` to harness = false targets.
            "--bench" => {}
            "--url" => url = Some(value("--url")?),
            "--rate" => rate = Some(num(&value("--rate")?)?),
            "--duration" => duration = num(&value("--duration")?)?,
            "--warmup" => warmup = num(&value("--warmup")?)?,
            "--connections" => connections = num(&value("--connections")?)? as usize,
            "--threads" => threads = num(&value("--threads")?)? as usize,
            "-H" | "--header" => headers.push(value("-H")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let Some(url) = url else {
        return Ok(None);
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (host_port, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let rate = rate.ok_or("--rate is required")?;
    if rate <= 0.0 || connections == 0 || threads == 0 || duration <= 0.0 || warmup < 0.0 {
        return Err("rate, connections, threads and duration must be positive".into());
    }
    Ok(Some(Args {
        host_port,
        path,
        rate,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        connections,
        threads,
        headers,
    }))
}

fn num(s: &str) -> Result<f64, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

/// What one connection task measured.
struct Stats {
    hist: Histogram<u64>,
    ok: u64,
    non2xx: u64,
    errors: u64,
    /// Requests that were due while the previous response on their connection was still
    /// outstanding (their latency counts from the due time).
    late: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            // 1 µs .. 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            ok: 0,
            non2xx: 0,
            errors: 0,
            late: 0,
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let mut request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", args.path, args.host_port);
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request: &'static [u8] = Box::leak(request.into_bytes().into_boxed_slice());
    let host_port: &'static str = Box::leak(args.host_port.clone().into_boxed_str());

    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    // Connect everything first so connection set-up is not part of the measurement.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        match connect(host_port).await {
            Ok(s) => streams.push(s),
            Err(e) => {
                eprintln!("loadgen: cannot connect to {host_port}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::with_capacity(args.connections);
    for (i, stream) in streams.into_iter().enumerate() {
        let offset = interval.mul_f64(i as f64 / args.connections as f64);
        tasks.push(tokio::spawn(connection(
            stream,
            host_port,
            request,
            start + offset,
            interval,
            measure_from,
            end,
        )));
    }
    let mut total = Stats::new();
    for t in tasks {
        let s = t.await.expect("connection task");
        total.hist.add(&s.hist).expect("histogram add");
        total.ok += s.ok;
        total.non2xx += s.non2xx;
        total.errors += s.errors;
        total.late += s.late;
    }
    let secs = args.duration.as_secs_f64();
    let done = total.ok + total.non2xx;
    let ms = |q: f64| total.hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "target {:.0} req/s over {} connections, {:.1} s measured after {:.1} s warm-up",
        args.rate,
        args.connections,
        secs,
        args.warmup.as_secs_f64()
    );
    println!(
        "achieved {:.1} req/s: {} ok, {} non-2xx, {} errors, {} due while their connection was busy",
        done as f64 / secs,
        total.ok,
        total.non2xx,
        total.errors,
        total.late
    );
    println!(
        "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        total.hist.max() as f64 / 1000.0
    );
    println!(
        "RESULT rate={:.0} achieved={:.1} ok={} non2xx={} errors={} late={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        args.rate,
        done as f64 / secs,
        total.ok,
        total.non2xx,
        total.errors,
        total.late,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        total.hist.max() as f64 / 1000.0
    );
    if total.ok == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn connect(host_port: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(host_port).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn connection(
    stream: TcpStream,
    host_port: &'static str,
    request: &'static [u8],
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::new();
    let mut stream = Some(stream);
    let mut buf = Vec::with_capacity(4096);
    let mut due = first;
    let mut k: u32 = 0;
    // When the previous response on this connection was complete.
    let mut prev_done = first;
    while due < end {
        tokio::time::sleep_until(due).await;
        let sent = Instant::now();
        // The previous response came after this request was due: the server held it up,
        // charge from `due`. Otherwise any gap is this process's own delay: charge from
        // the actual send.
        let busy = prev_done > due;
        let from = if busy { due } else { sent };
        let result = match stream.as_mut() {
            Some(s) => exchange(s, request, &mut buf).await,
            None => Err("not connected".into()),
        };
        let measured = due >= measure_from;
        match result {
            Ok((status, keep_alive)) => {
                if measured {
                    let us = from.elapsed().as_micros().max(1) as u64;
                    stats.hist.saturating_record(us);
                    if (200..300).contains(&status) {
                        stats.ok += 1;
                    } else {
                        stats.non2xx += 1;
                    }
                    stats.late += u64::from(busy);
                }
                prev_done = Instant::now();
                if !keep_alive {
                    stream = connect(host_port).await.ok();
                }
            }
            Err(_) => {
                if measured {
                    stats.errors += 1;
                }
                buf.clear();
                stream = connect(host_port).await.ok();
                prev_done = Instant::now();
            }
        }
        k += 1;
        due = first + interval * k;
    }
    stats
}

/// Sends one request and reads one response; returns its status and whether the
/// connection stays open.
async fn exchange(
    s: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), String> {
    s.write_all(request).await.map_err(|e| e.to_string())?;
    buf.clear();
    let head_len = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(s, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "response head not UTF-8")?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut content_length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().map_err(|_| "bad content-length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        let mut pos = head_len;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                read_more(s, buf).await?;
            };
            let size_str = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| "bad chunk")?;
            let size_str = size_str.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_str, 16).map_err(|_| "bad chunk size")?;
            if size == 0 {
                // No trailers expected: the last chunk ends with an empty line.
                while buf.len() < line_end + 4 {
                    read_more(s, buf).await?;
                }
                return Ok((status, keep_alive));
            }
            pos = line_end + 2 + size + 2;
            while buf.len() < pos {
                read_more(s, buf).await?;
            }
        }
    }
    if status == 204 || status == 304 {
        return Ok((status, keep_alive));
    }
    let Some(len) = content_length else {
        return Err("response without content-length or chunked framing".into());
    };
    while buf.len() < head_len + len {
        read_more(s, buf).await?;
    }
    Ok((status, keep_alive))
}

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.len() > MAX_RESPONSE {
        return Err("response too large".into());
    }
    buf.reserve(4096);
    let n = s.read_buf(buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
