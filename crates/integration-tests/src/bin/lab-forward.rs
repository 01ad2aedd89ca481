//! `lab-forward LISTEN TARGET`: accepts TCP connections on LISTEN and splices each to a new
//! connection to TARGET. The lab runs one inside a cluster's network namespace per NodePort
//! Service it serves, standing in for kube-proxy (whose rules would send the traffic to pod IPs
//! that kwok only pretends to assign).

use std::net::SocketAddr;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(target)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
    ) else {
        eprintln!("usage: lab-forward LISTEN_ADDR:PORT TARGET_ADDR:PORT");
        return std::process::ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("lab-forward: listen on {listen}: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        eprintln!("lab-forward: {listen} -> {target}");
        loop {
            let Ok((mut inbound, from)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                match tokio::net::TcpStream::connect(target).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => eprintln!("lab-forward: {from} -> {target}: {e}"),
                }
            });
        }
    })
}
