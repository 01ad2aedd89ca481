//! `lab-forward LISTEN TARGET`: accepts TCP connections on LISTEN and splices each to a new
//! connection to TARGET. The lab runs one inside a cluster's network namespace per NodePort
//! Service it serves, standing in for kube-proxy (whose rules would send the traffic to pod IPs
//! that kwok only pretends to assign).
//!
//! It listens only while TARGET accepts connections, so that a client sees what it would see
//! through kube-proxy when the pod's port is closed: the connection refused.

use std::net::SocketAddr;
use std::time::Duration;

async fn target_up(target: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(target)
        )
        .await,
        Ok(Ok(_))
    )
}

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
        eprintln!("lab-forward: {listen} -> {target}");
        loop {
            while !target_up(target).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let listener = match tokio::net::TcpListener::bind(listen).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("lab-forward: listen on {listen}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            // Serve until the target goes away, then stop listening.
            loop {
                let accepted =
                    tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
                match accepted {
                    Ok(Ok((mut inbound, from))) => {
                        tokio::spawn(async move {
                            match tokio::net::TcpStream::connect(target).await {
                                Ok(mut outbound) => {
                                    let _ =
                                        tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
                                            .await;
                                }
                                Err(e) => eprintln!("lab-forward: {from} -> {target}: {e}"),
                            }
                        });
                    }
                    Ok(Err(_)) => {}
                    Err(_) => {
                        if !target_up(target).await {
                            eprintln!("lab-forward: {target} down: not listening");
                            break;
                        }
                    }
                }
            }
        }
    })
}
