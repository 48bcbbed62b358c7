//! exec, attach and port-forward through MCA over WebSocket and SPDY/3.1, with kubectl and
//! the Python client, as an application in the pod would run them.
//!
//! `kubectl exec`/`attach`/`port-forward` over WebSocket and SPDY/3.1, Python exec and port-forward
//! over WebSocket.

use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    time::Duration,
};

use mca_tests::harness::{Env, NAMESPACE, output_with_input, venv_program};

/// kubectl as the application, with `env` set (transport switches).
fn kubectl(env: &Env, vars: &[(&str, &str)]) -> Command {
    let mut command = env.pod.app(venv_program("kubectl"));
    command.envs(vars.iter().copied());
    command
}

const SPDY: &[(&str, &str)] = &[
    ("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"),
    ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"),
];
const WEBSOCKET: &[(&str, &str)] = &[];

/// The upgrade requests the server saw for `subresource`: their `Upgrade` headers.
fn upgrades_seen(env: &Env, subresource: &str) -> Vec<String> {
    env.apiserver()
        .requests()
        .into_iter()
        .filter(|r| r.target.contains(&format!("/pods/web/{subresource}")))
        .filter_map(|r| r.header("upgrade").map(str::to_owned))
        .collect()
}

fn exec_echo(transport: &[(&str, &str)], upgrade: &str) -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let output = kubectl(&env, transport)
        .args(["exec", "web", "--", "echo", "hello", "through", "mca"])
        .stdin(Stdio::null())
        .output()?;
    assert!(output.status.success(), "{output:?}\n{}", env.mca.log());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello through mca\n"
    );
    assert_eq!(upgrades_seen(&env, "exec"), [upgrade]);

    // stdin crosses too, and the session ends when stdin does.
    let output = output_with_input(
        kubectl(&env, transport).args(["exec", "-i", "web", "--", "cat"]),
        b"typed into the app\n",
    )?;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "typed into the app\n"
    );

    // A failing command's exit code reaches the user.
    let status = kubectl(&env, transport)
        .args(["exec", "web", "--", "false"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    assert_eq!(status.code(), Some(1));

    let output = kubectl(&env, transport)
        .args(["attach", "web"])
        .stdin(Stdio::null())
        .output()?;
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("attached to app"));

    let line = env
        .mca
        .wait_for_access(|l| l["subresource"] == "exec" && l["status"] == 101)?;
    assert_eq!(line["namespace"], NAMESPACE);
    assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
    Ok(())
}

#[test]
fn kubectl_exec_and_attach_over_websocket() -> anyhow::Result<()> {
    exec_echo(WEBSOCKET, "websocket")
}

#[test]
fn kubectl_exec_and_attach_over_spdy() -> anyhow::Result<()> {
    exec_echo(SPDY, "SPDY/3.1")
}

fn port_forward(transport: &[(&str, &str)], upgrade: &str, local_port: u16) -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let mut child = kubectl(&env, transport)
        .args(["port-forward", "pod/web", &format!("{local_port}:80")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    assert!(line.starts_with("Forwarding from"), "{line:?}");

    // Two connections one after the other, each echoed by the "pod".
    for message in ["first connection\n", "second connection\n"] {
        let mut stream = env.pod.connect(([127, 0, 0, 1], local_port).into())?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(message.as_bytes())?;
        let mut echoed = vec![0u8; message.len()];
        stream.read_exact(&mut echoed)?;
        assert_eq!(String::from_utf8_lossy(&echoed), message);
    }
    child.kill()?;
    child.wait()?;
    assert_eq!(upgrades_seen(&env, "portforward"), [upgrade]);
    Ok(())
}

#[test]
fn kubectl_port_forward_over_websocket() -> anyhow::Result<()> {
    port_forward(WEBSOCKET, "websocket", 18080)
}

#[test]
fn kubectl_port_forward_over_spdy() -> anyhow::Result<()> {
    port_forward(SPDY, "SPDY/3.1", 18081)
}

#[test]
fn python_exec_and_port_forward_over_websocket() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let out = env.python(&["exec", NAMESPACE, "web", "echo", "from", "python"])?;
    assert_eq!(out, "from python\n");
    let out = env.python(&["portforward", NAMESPACE, "web", "80", "hello port 80"])?;
    assert_eq!(out.trim(), "hello port 80");
    assert_eq!(upgrades_seen(&env, "exec"), ["websocket"]);
    assert_eq!(upgrades_seen(&env, "portforward"), ["websocket"]);
    Ok(())
}
