//! `baton dev`'s metrics: each child serves `/metrics` on 127.0.0.1, on a
//! port of its own (from `--metrics-port` on, or free ones), kept across
//! restarts (a child started again gets its command line, port included).

/// The port of each named child: `base`, `base + 1`, ... or, with `base`
/// 0, ports free now.
pub fn ports(base: u16, names: &[String]) -> anyhow::Result<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let port = if base == 0 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        } else {
            let port = u16::try_from(base as usize + i).ok();
            port.ok_or_else(|| {
                anyhow::anyhow!(
                    "--metrics-port {base}: too high for {} processes",
                    names.len()
                )
            })?
        };
        out.push((name.clone(), port));
    }
    Ok(out)
}

/// The banner's line: where to scrape each child.
pub fn urls(ports: &[(String, u16)]) -> String {
    let urls: Vec<String> = ports
        .iter()
        .map(|(name, port)| format!("{name} http://127.0.0.1:{port}/metrics"))
        .collect();
    urls.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ports_count_up_and_free_ones_differ() {
        let names = vec!["broker".to_string(), "sub-1".to_string()];
        let fixed = ports(9464, &names).unwrap();
        assert_eq!(fixed, vec![("broker".into(), 9464), ("sub-1".into(), 9465)]);
        assert_eq!(
            urls(&fixed),
            "broker http://127.0.0.1:9464/metrics, sub-1 http://127.0.0.1:9465/metrics"
        );
        assert!(ports(65535, &names).is_err());
        let free = ports(0, &names).unwrap();
        assert!(free.iter().all(|(_, p)| *p != 0));
    }
}
