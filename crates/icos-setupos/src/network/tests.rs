use super::*;

macro_rules! data {
    ($machine:literal, $file:literal) => {
        include_str!(concat!("../../tests/data/", $machine, "/", $file))
    };
}

fn config(json: &str) -> SetupOSConfig {
    icos_config::from_json_str(json).expect("config.json")
}

fn gen2_facts() -> NetworkFacts {
    NetworkFacts {
        interfaces: parse_ip_addr(data!("gen2-7313", "ip-addr.json")).unwrap(),
        routes: parse_ip_route(data!("gen2-7313", "ip-route.json")).unwrap(),
        ping6: parse_ping(data!("gen2-7313", "ping6")),
        ping4: Some(parse_ping(data!("gen2-7313", "ping4"))),
        nns: parse_nns_probes(data!("gen2-7313", "nns")).unwrap(),
    }
}

#[test]
fn ip_json_parses() {
    let ifs = parse_ip_addr(data!("gen2-7313", "ip-addr.json")).unwrap();
    assert_eq!(
        ifs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["lo", "enp65s0f0", "enp65s0f1", "br6"]
    );
    let br6 = &ifs[3];
    assert_eq!(br6.mac.as_deref(), Some("6a:0f:38:3f:55:67"));
    assert_eq!(br6.addrs.len(), 3);
    assert!(br6.addrs[1].dynamic);
    assert_eq!(br6.addrs[1].prefix_len, 64);
    let routes = parse_ip_route(data!("gen2-7313", "ip-route.json")).unwrap();
    let default = routes.iter().find(|r| r.dst == "default").unwrap();
    assert_eq!(default.gateway.as_deref(), Some("fe80::1"));
    assert_eq!(default.protocol, "ra");
    assert!(parse_ip_addr("{}").is_err());
    assert!(parse_ip_addr("[{\"addr_info\":[]}]").is_err());
    assert!(parse_ip_route("[{\"dev\":\"x\"}]").is_err());
}

#[test]
fn ping_summaries() {
    let ok = parse_ping(data!("gen2-7313", "ping6"));
    assert_eq!((ok.transmitted, ok.received), (4, 4));
    assert!(ok.answered());
    let lost = parse_ping(data!("gen1-7302", "ping4"));
    assert_eq!((lost.transmitted, lost.received), (2, 0));
    assert!(lost.summary.contains("+2 errors"));
    let none = parse_ping("ping: connect: Network is unreachable\n");
    assert!(!none.answered());
    assert_eq!(none.summary, "ping: connect: Network is unreachable");
    assert_eq!(parse_ping("").summary, "no output");
}

#[test]
fn nns_probe_lines() {
    let p = parse_nns_probes("# probes\nhttps://icp-api.io 200\n\nhttps://icp0.io 000\n").unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].status, 0);
    assert!(
        parse_nns_probes("https://icp-api.io")
            .unwrap_err()
            .0
            .contains("line 1")
    );
    assert!(
        parse_nns_probes("https://icp-api.io OK")
            .unwrap_err()
            .0
            .contains("'OK'")
    );
}

#[test]
fn gen2_network_passes_and_names_the_derived_addresses() {
    let r = check_network(&config(data!("gen2-7313", "config.json")), &gen2_facts());
    assert!(r.passed(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
    for fact in [
        "derived SetupOS address: 2001:db8:1234:56:680f:38ff:fe3f:5567",
        "derived HostOS address: 2001:db8:1234:56:6800:38ff:fe3f:5567",
        "derived GuestOS address: 2001:db8:1234:56:6801:38ff:fe3f:5567",
        "system: default route via fe80::1 dev br6 (proto ra)",
        "system: interface br6 (UP, MAC 6a:0f:38:3f:55:67), global IPv6 2001:db8:1234:56:680f:38ff:fe3f:5567",
        "NNS http://[2001:db8:1234:56::10]:8080/: HTTP 200",
    ] {
        assert!(
            r.facts.iter().any(|f| f == fact),
            "missing {fact:?} in\n{r}"
        );
    }
}

#[test]
fn gen1_network_lists_every_problem() {
    let facts = NetworkFacts {
        interfaces: parse_ip_addr(data!("gen1-7302", "ip-addr.json")).unwrap(),
        routes: parse_ip_route(data!("gen1-7302", "ip-route.json")).unwrap(),
        ping6: parse_ping(data!("gen1-7302", "ping6")),
        ping4: Some(parse_ping(data!("gen1-7302", "ping4"))),
        nns: parse_nns_probes(data!("gen1-7302", "nns")).unwrap(),
    };
    let r = check_network(&config(data!("gen1-7302", "config.json")), &facts);
    assert_eq!(r.errors.len(), 3, "{r}");
    assert!(r.errors[0].starts_with(
        "interface br6 holds no address in the configured 2001:db8:1234:56::/64 (the router advertises another prefix)"
    ), "{r}");
    assert!(
        r.errors[1].starts_with(
            "the IPv4 gateway 203.0.113.17 does not answer ping: 2 packets transmitted, 0 received"
        ),
        "{r}"
    );
    assert!(
        r.errors[2].starts_with("none of the NNS URLs answered"),
        "{r}"
    );
}

#[test]
fn qemu_user_network_has_the_wrong_prefix_and_no_gateway() {
    let facts = NetworkFacts {
        interfaces: parse_ip_addr(data!("qemu-vm", "ip-addr.json")).unwrap(),
        routes: parse_ip_route(data!("qemu-vm", "ip-route.json")).unwrap(),
        ping6: parse_ping(data!("qemu-vm", "ping6")),
        ping4: None,
        nns: parse_nns_probes(data!("qemu-vm", "nns")).unwrap(),
    };
    let r = check_network(&config(data!("qemu-vm", "config.json")), &facts);
    // fec0::/64 is site scope: no global address at all.
    assert!(
        r.errors[0].starts_with(
            "interface enp0s2 holds no address in the configured 2001:db8:1234:56::/64; check"
        ),
        "{r}"
    );
    assert!(
        r.errors[1].starts_with("the IPv6 gateway 2001:db8:1234:56::1 does not answer ping"),
        "{r}"
    );
    assert!(
        r.errors[2].starts_with("none of the NNS URLs answered"),
        "{r}"
    );
    assert_eq!(r.errors.len(), 3, "{r}");
}

#[test]
fn route_and_address_warnings_and_errors() {
    let cfg = config(data!("gen2-7313", "config.json"));

    // No default route at all.
    let mut f = gen2_facts();
    f.routes.retain(|r| r.dst != "default");
    let r = check_network(&cfg, &f);
    assert!(r.errors[0].starts_with("no default IPv6 route"), "{r}");
    // The address is still found through the prefix.
    assert_eq!(r.errors.len(), 1, "{r}");

    // A static default route and an address that is not the derived one.
    let mut f = gen2_facts();
    for route in f.routes.iter_mut().filter(|r| r.dst == "default") {
        route.protocol = "static".into();
    }
    for a in f.interfaces[3].addrs.iter_mut() {
        if a.scope == "global" && a.addr.is_ipv6() {
            a.addr = "2001:db8:1234:56::99".parse().unwrap();
        }
    }
    let r = check_network(&cfg, &f);
    assert!(r.passed(), "{r}");
    assert_eq!(r.warnings.len(), 2, "{r}");
    assert!(r.warnings[0].contains("(proto static)"));
    assert!(r.warnings[1].contains("does not hold the derived SetupOS address"));

    // An NNS URL that was not probed, while another answered.
    let mut f = gen2_facts();
    f.nns[0].url = "https://icp-api.io".into();
    let r = check_network(&cfg, &f);
    assert!(r.passed(), "{r}");
    assert_eq!(
        r.warnings,
        ["NNS URL http://[2001:db8:1234:56::10]:8080/ was not probed"]
    );
}

#[test]
fn ipv4_domain_rule_and_missing_ping() {
    let mut cfg = config(data!("gen2-7313", "config.json"));
    cfg.network_settings.domain_name = Some("-node1.example.com".into());
    let mut f = gen2_facts();
    f.ping4 = None;
    let r = check_network(&cfg, &f);
    assert_eq!(r.errors.len(), 2, "{r}");
    assert!(r.errors[0].starts_with("domain: "), "{r}");
    assert!(r.errors[0].contains("-node1"), "{r}");
    assert_eq!(r.errors[1], "the IPv4 gateway 203.0.113.17 was not pinged");
    for bad in [
        "node1",
        "a..b",
        &format!("{}.com", "a".repeat(64)),
        "no_underscore.com",
    ] {
        cfg.network_settings.domain_name = Some(bad.to_string());
        let r = check_network(&cfg, &gen2_facts());
        assert!(
            r.errors.iter().any(|e| e.starts_with("domain: ")),
            "{bad}: {r}"
        );
    }
    cfg.network_settings.domain_name = None;
    let r = check_network(&cfg, &gen2_facts());
    assert_eq!(
        r.errors,
        ["IPv4 is configured without a domain; set domain in config.ini"]
    );
}
