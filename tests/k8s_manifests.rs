//! The Kubernetes manifests in `deploy/kubernetes/`: every resource validates against the
//! Kubernetes API schemas (the `kubernetes-validate` package from PyPI, which ships them,
//! so this works offline once it is installed), and the manifests agree with each other
//! and with the binary: the StatefulSet passes only flags `flotilla node` has, its replica
//! count matches `--initial-cluster`, its ports match the Services', and the TLS patch
//! changes nothing but TLS. The last three tests check the node behaviour the StatefulSet
//! relies on: `GET /v1/ready`, `--join` next to `--initial-cluster`, and a removed node
//! that Kubernetes restarts.
//!
//! The validator runs on a `python3` that can import it (`.ci/run` installs it); where the
//! machine's cannot, the test makes a virtualenv under the cargo target dir once and
//! installs the pinned version there. Without `python3` at all the test fails and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use flotilla_tests::{
    Cluster, admin, die_with_parent, eventually, flotilla_bin, free_ports, get_json, request,
};
use serde_json::{Value, json};

/// The validator version `.ci/run` and the fallback virtualenv install.
const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest Kubernetes release the manifests support, and the newest the validator knows.
const K8S_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// Resources `kubectl apply -k deploy/kubernetes` creates.
const BASE_RESOURCES: [&str; 4] =
    ["statefulset.yaml", "headless-service.yaml", "service.yaml", "pdb.yaml"];
/// Resources applied on purpose only (docs/operations.md).
const OPT_IN_RESOURCES: [&str; 2] = ["service-loadbalancer.yaml", "secret.example.yaml"];
/// The other files: checked by the tests below rather than by the schema validator.
const NOT_RESOURCES: [&str; 2] = ["tls-patch.yaml", "kustomization.yaml"];
/// What the TLS patch adds to the StatefulSet's arguments.
const TLS_FLAGS: [&str; 3] = [
    "--tls-cert=/etc/flotilla/tls/tls.crt",
    "--tls-key=/etc/flotilla/tls/tls.key",
    "--tls-ca=/etc/flotilla/tls/ca.crt",
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// A Python interpreter that imports `kubernetes_validate` at the pinned version (and so
/// PyYAML, which it depends on). Found or made once per test process.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        match can_import_validator(&system) {
            None => panic!(
                "python3 is not installed: the Kubernetes manifest checks need it \
                 (apt-get install python3 python3-venv)"
            ),
            Some(true) => system,
            Some(false) => venv_python(),
        }
    })
}

/// Whether `python` imports the pinned validator; `None` when it does not run at all.
fn can_import_validator(python: &Path) -> Option<bool> {
    let check = format!(
        "import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != '{VALIDATOR_VERSION}')"
    );
    let out = Command::new(python).args(["-c", &check]).output().ok()?;
    Some(out.status.success())
}

/// The fallback virtualenv's interpreter, under the cargo target dir. It is built in a
/// directory of its own and renamed into place, so a concurrent or interrupted run never
/// leaves a half-installed one behind (`python -m` works from a moved virtualenv).
fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let venv = root.join("kubernetes-validate-venv");
    let python = venv.join("bin/python3");
    if can_import_validator(&python) == Some(true) {
        return python;
    }
    let tmp = root.join(format!("kubernetes-validate-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run_ok(Command::new("python3").args(["-m", "venv"]).arg(&tmp), "python3 -m venv");
    let package = format!("kubernetes-validate=={VALIDATOR_VERSION}");
    run_ok(
        Command::new(tmp.join("bin/python3")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &package,
        ]),
        &format!("pip install {package} (PyPI must be reachable, or install it yourself)"),
    );
    let _ = std::fs::remove_dir_all(&venv);
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another test process won the race; use its virtualenv.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert_eq!(can_import_validator(&python), Some(true), "validator not importable from {venv:?}");
    python
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n{text}", out.status);
    text
}

/// The YAML documents of `file`, as JSON (parsed by PyYAML, which the validator brings).
fn load(file: &str) -> Vec<Value> {
    const TO_JSON: &str = "import json, sys, yaml\n\
        print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let path = deploy_dir().join(file);
    let text = run_ok(Command::new(python()).args(["-c", TO_JSON]).arg(&path), "yaml to json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}: {text}"))
}

fn load_one(file: &str) -> Value {
    let mut docs = load(file);
    assert_eq!(docs.len(), 1, "{file} holds one resource");
    docs.remove(0)
}

fn container(sts: &Value) -> &Value {
    let containers = sts["spec"]["template"]["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(sts: &Value) -> Vec<String> {
    let args = container(sts)["args"].as_array().expect("args");
    args.iter().map(|a| a.as_str().expect("string arg").to_string()).collect()
}

/// The value of `--name=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("{name}=");
    let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
    assert_eq!(found.len(), 1, "{name} given once as {name}=VALUE in {args:?}");
    found[0]
}

fn port_of(addr: &str) -> u64 {
    let (_, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr} is HOST:PORT"));
    port.parse().unwrap_or_else(|_| panic!("{addr}: port"))
}

/// The container's named ports.
fn container_ports(sts: &Value) -> BTreeMap<String, u64> {
    let ports = container(sts)["ports"].as_array().expect("ports");
    ports
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("port name").into(),
                p["containerPort"].as_u64().expect("port"),
            )
        })
        .collect()
}

/// Strategic merge as Kubernetes does it for the fields a patch of ours touches: objects
/// merge, lists of objects merge by their merge key, other lists are replaced.
fn strategic_merge(base: &mut Value, patch: &Value, field: &str) {
    let merge_key = match field {
        "containers" | "volumes" | "env" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some("containerPort"),
        _ => None,
    };
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                strategic_merge(b.entry(k.clone()).or_insert(Value::Null), v, k);
            }
        }
        (Value::Array(b), Value::Array(p)) if merge_key.is_some() => {
            let key = merge_key.expect("merge key");
            for item in p {
                match b.iter_mut().find(|x| x[key] == item[key]) {
                    Some(existing) => strategic_merge(existing, item, ""),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The StatefulSet with `tls-patch.yaml` applied.
fn tls_statefulset() -> Value {
    let mut sts = load_one("statefulset.yaml");
    let patch = load_one("tls-patch.yaml");
    assert_eq!(
        (patch["kind"].as_str(), &patch["metadata"]["name"]),
        (Some("StatefulSet"), &sts["metadata"]["name"])
    );
    strategic_merge(&mut sts, &patch, "");
    sts
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut resources = 0;
    for name in BASE_RESOURCES.iter().chain(&OPT_IN_RESOURCES) {
        resources += load(name).len();
        files.push(dir.join(name));
    }
    // The TLS variant, as `kubectl apply -k` would build it with the patch turned on.
    let tmp = tempfile::tempdir().expect("tempdir");
    let tls = tmp.path().join("statefulset-tls.json");
    std::fs::write(&tls, tls_statefulset().to_string()).expect("write");
    files.push(tls);
    resources += 1;

    let mut cmd = Command::new(python());
    cmd.args(["-m", "kubernetes_validate", "--strict"]);
    for v in K8S_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = run_ok(cmd.args(&files), "kubernetes-validate");
    // A resource whose kind or apiVersion has no schema is only a warning (exit 0): count
    // the passes, so that nothing goes unvalidated.
    let passed = out.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed ")).count();
    let other: Vec<&str> = out.lines().filter(|l| !l.starts_with("INFO")).collect();
    assert!(other.is_empty(), "validator warnings:\n{out}");
    assert_eq!(
        passed,
        resources * K8S_VERSIONS.len(),
        "every resource passed on every version:\n{out}"
    );
    let version =
        run_ok(Command::new(python()).args(["-m", "kubernetes_validate", "--version"]), "version");
    eprintln!(
        "kubernetes-validate {} --strict, Kubernetes {K8S_VERSIONS:?}: {passed} passes",
        version.trim()
    );
}

#[test]
fn kustomization_covers_every_file_and_the_storage_class_setting_fits() {
    let k = load_one("kustomization.yaml");
    let listed: Vec<&str> =
        k["resources"].as_array().expect("resources").iter().filter_map(Value::as_str).collect();
    assert_eq!(listed, BASE_RESOURCES, "kustomization.yaml resources");
    let mut on_disk: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(deploy_dir()).expect("deploy dir") {
        on_disk.insert(entry.expect("entry").file_name().to_string_lossy().into_owned());
    }
    let known: BTreeSet<String> = BASE_RESOURCES
        .iter()
        .chain(&OPT_IN_RESOURCES)
        .chain(&NOT_RESOURCES)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        on_disk, known,
        "every file in deploy/kubernetes is a resource or a documented opt-in"
    );

    // The storage class is set in kustomization.yaml only, by a patch of the first claim
    // template's spec: the manifest itself leaves it to the cluster's default class.
    let sts = load_one("statefulset.yaml");
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert!(
        claim["spec"]["storageClassName"].is_null(),
        "storageClassName lives in kustomization.yaml"
    );
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml")).expect("read");
    assert!(text.contains("STORAGE CLASS"));
    assert!(text.contains("path: /spec/volumeClaimTemplates/0/spec/storageClassName"));
    let mounts = container(&sts)["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.iter().any(|m| m["name"] == "data" && m["mountPath"] == "/data"));
    assert_eq!(flag(&args(&sts), "--data-dir"), "/data");
}

/// The long options `flotilla node --help` lists.
fn node_flags() -> BTreeSet<String> {
    let help =
        run_ok(Command::new(flotilla_bin()).args(["node", "--help"]), "flotilla node --help");
    // Option lines start with the option ("  -h, --help", "      --id <ID>"); a flag that
    // is only mentioned in another option's description does not count.
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split([' ', ',', '=']).find(|w| w.starts_with("--") && w.len() > 2))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_statefulset_passes_only_flags_that_flotilla_node_has() {
    let known = node_flags();
    for (what, sts) in [
        ("statefulset.yaml", load_one("statefulset.yaml")),
        ("with tls-patch.yaml", tls_statefulset()),
    ] {
        let args = args(&sts);
        assert_eq!(args[0], "node", "{what}: the container runs `flotilla node`");
        let unknown: Vec<&str> = args[1..]
            .iter()
            .map(|a| {
                assert!(a.starts_with("--"), "{what}: write each argument as --flag=value: {a}");
                a.split_once('=').map_or(a.as_str(), |(name, _)| name)
            })
            .filter(|name| !known.contains(*name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{what}: `flotilla node --help` lacks {unknown:?} (it has {known:?})"
        );
    }
}

#[test]
fn replicas_match_the_initial_cluster_and_ports_match_the_services() {
    let sts = load_one("statefulset.yaml");
    let args = args(&sts);
    let name = sts["metadata"]["name"].as_str().expect("name");
    let peers = sts["spec"]["serviceName"].as_str().expect("serviceName");
    let ports = container_ports(&sts);
    let (raft, api) = (ports["raft"], ports["api"]);

    // Pod NAME-N is node N+1, reachable as NAME-N.PEERS.
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    let entries: Vec<&str> = flag(&args, "--initial-cluster").split(',').collect();
    let expected: Vec<String> = (1..=replicas)
        .map(|id| {
            let host = format!("{name}-{}.{peers}", id - 1);
            format!("{id}={host}:{raft}@{host}:{api}")
        })
        .collect();
    assert_eq!(entries, expected, "one --initial-cluster entry per replica");
    assert!(args.iter().any(|a| a == "--id-from-hostname"));
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(port_of(flag(&args, "--listen")), raft);
    assert_eq!(port_of(flag(&args, "--api")), api);
    assert_eq!(flag(&args, "--advertise-peer"), format!("$(POD_NAME).{peers}:{raft}"));
    assert_eq!(flag(&args, "--advertise-api"), format!("$(POD_NAME).{peers}:{api}"));
    let env = container(&sts)["env"].as_array().expect("env");
    let pod_name = env.iter().find(|e| e["name"] == "POD_NAME").expect("POD_NAME");
    assert_eq!(pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&sts["spec"]["selector"]["matchLabels"], labels);
    let headless = load_one("headless-service.yaml");
    assert_eq!(headless["metadata"]["name"], peers);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let client = load_one("service.yaml");
    let external = load_one("service-loadbalancer.yaml");
    assert_eq!(external["spec"]["type"], "LoadBalancer");
    for svc in [&headless, &client, &external] {
        let svc_name = svc["metadata"]["name"].as_str().expect("name");
        assert_eq!(&svc["spec"]["selector"], labels, "{svc_name} selects the pods");
        for p in svc["spec"]["ports"].as_array().expect("ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert_eq!(p["port"].as_u64(), ports.get(target).copied(), "{svc_name}: port {target}");
        }
    }
    // Pods beyond the initial ones join through the client Service.
    let client_name = client["metadata"]["name"].as_str().expect("name");
    assert_eq!(flag(&args, "--join"), format!("http://{client_name}:{api}"));
    assert_eq!(client["spec"]["ports"][0]["targetPort"], "api");

    let pdb = load_one("pdb.yaml");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);

    let c = container(&sts);
    assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/v1/ready", "port": "api"}));
    assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/v1/status", "port": "api"}));
    assert_eq!(c["startupProbe"]["httpGet"], json!({"path": "/v1/status", "port": "api"}));

    // The Secret's keys are the ones the pods read.
    let secret = load_one("secret.example.yaml");
    let refs: BTreeSet<(String, String)> = env
        .iter()
        .filter_map(|e| e["valueFrom"].get("secretKeyRef"))
        .map(|r| (r["name"].as_str().expect("name").into(), r["key"].as_str().expect("key").into()))
        .collect();
    let given: BTreeSet<(String, String)> = secret["stringData"]
        .as_object()
        .expect("stringData")
        .keys()
        .map(|k| (secret["metadata"]["name"].as_str().expect("name").into(), k.clone()))
        .collect();
    assert_eq!(refs, given);
}

#[test]
fn the_tls_patch_adds_certificates_and_https_and_nothing_else() {
    let base = load_one("statefulset.yaml");
    let tls = tls_statefulset();
    let mut expected = args(&base);
    for a in expected.iter_mut().filter(|a| a.starts_with("--join=http://")) {
        *a = a.replacen("--join=http://", "--join=https://", 1);
    }
    expected.extend(TLS_FLAGS.iter().map(|s| s.to_string()));
    assert_eq!(args(&tls), expected);

    let c = container(&tls);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], container(&base)[probe]["httpGet"]["path"]);
    }
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert_eq!(mounts.len(), 2, "data and tls: {mounts:?}");
    let tls_mount = mounts.iter().find(|m| m["name"] == "tls").expect("tls mount");
    for f in TLS_FLAGS {
        let (_, path) = f.split_once('=').expect("flag=path");
        let dir = tls_mount["mountPath"].as_str().expect("mountPath");
        assert!(path.starts_with(&format!("{dir}/")), "{path} is in the mounted Secret");
    }
    let volumes = tls["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[0]["secret"]["secretName"], "flotilla-tls");
}

// What the StatefulSet relies on from the node, beyond its flags: the readiness route, a
// `--join` that only pods beyond `--initial-cluster` act on (every pod gets the same
// arguments), and a removed pod that Kubernetes restarts staying out.

/// One `flotilla node` process with its own data dir, killed when dropped.
struct Node {
    child: Child,
    api: String,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(raft: &str, api: &str, initial_cluster: &str, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log");
        let mut cmd = Command::new(flotilla_bin());
        cmd.args(["node", "--id", "1", "--listen", raft, "--api", api])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--initial-cluster", initial_cluster])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn flotilla node");
        Node { child, api: format!("http://{api}"), dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// Polls `/v1/status` until `f` accepts it; panics with the node's log at the deadline.
    fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = get_json(&format!("{}/v1/status", self.api))
                && f(&st)
            {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "node 1: timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ready_answers_503_without_a_leader_and_200_with_one() {
    // Node 1 of three whose peers never start: it answers, but can never know a leader.
    let p = free_ports(6);
    let spec: Vec<String> = (0..3)
        .map(|i| format!("{}=127.0.0.1:{}@127.0.0.1:{}", i + 1, p[2 * i], p[2 * i + 1]))
        .collect();
    let alone = Node::start(
        &format!("127.0.0.1:{}", p[0]),
        &format!("127.0.0.1:{}", p[1]),
        &spec.join(","),
        &[],
    );
    alone.wait_status("its status", |st| st["leader"].is_null());
    let (status, body, _) = request("GET", &format!("{}/v1/ready", alone.api), None);
    assert_eq!(status, 503, "not ready without a leader: {body}");

    // A cluster of one elects itself: ready.
    let q = free_ports(2);
    let (raft, api) = (format!("127.0.0.1:{}", q[0]), format!("127.0.0.1:{}", q[1]));
    let single = Node::start(&raft, &api, &format!("1={raft}@{api}"), &[]);
    single.wait_status("a leader", |st| st["leader"] == 1);
    let (status, body, _) = request("GET", &format!("{}/v1/ready", single.api), None);
    assert_eq!(status, 200, "ready once a leader is known: {body}");
}

#[test]
fn a_node_named_in_the_initial_cluster_bootstraps_even_when_given_join() {
    // Every pod of the StatefulSet gets `--join`; the initial ones must still bootstrap.
    // Nobody listens at the join URL.
    let q = free_ports(3);
    let (raft, api) = (format!("127.0.0.1:{}", q[0]), format!("127.0.0.1:{}", q[1]));
    let join = format!("--join=http://127.0.0.1:{}", q[2]);
    let node = Node::start(&raft, &api, &format!("1={raft}@{api}"), &[&join]);
    let st = node.wait_status("node 1 to lead its cluster of one", |st| st["leader"] == 1);
    assert_eq!(member_ids(&st), [1]);
}

#[test]
fn a_removed_node_restarted_with_join_stays_out() {
    let mut c = Cluster::start(3, &[]);
    let first = c.ids();
    let (leader, _) = c.wait_leader(&first, Duration::from_secs(15));
    let url = c.api(leader);
    c.spawn_joining(4, &url);
    let voters = |c: &Cluster| -> Vec<u64> {
        let st = first.iter().find_map(|id| c.status(*id).filter(|s| s["role"] == "leader"));
        st.map(|s| {
            s["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["voter"] == true)
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
    };
    eventually(Duration::from_secs(30), "node 4 becomes a voter", || voters(&c).contains(&4));
    // The promotion may still be committing when node 4 first shows as a voter: a
    // removal then answers 409 change_in_progress, which is retried.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) =
            admin("DELETE", &url, "/v1/admin/members/4", None, Duration::from_secs(30));
        if status != 409 || body["error"] != "change_in_progress" || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 200, "remove node 4: {body}");
    let exit = c.wait_exit(4, Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "removed node 4 exits 0: {exit:?}\n{}", c.log_of(4));

    // Kubernetes restarts the container with the same arguments, --join included.
    c.spawn(4);
    let exit = c.wait_exit(4, Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "a removed node restarted with --join must see that it was removed and exit 0, not \
         ask to be added again: {exit:?}\n{}",
        c.log_of(4)
    );
    let st = c.status(leader).expect("the leader's status");
    assert_eq!(member_ids(&st), first, "node 4 stays out");
}

/// The ids in a status answer's `members`.
fn member_ids(st: &Value) -> Vec<u64> {
    st["members"].as_array().expect("members").iter().filter_map(|m| m["id"].as_u64()).collect()
}
