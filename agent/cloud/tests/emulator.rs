//! The emulator itself behaves as AWS documents IMDS (so the client tests mean something).

use guestward_imds_emulator::{Emulator, EmulatorConfig, TokenMode};

const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";

async fn put_token(client: &reqwest::Client, emu: &Emulator, ttl: Option<&str>) -> reqwest::Response {
    let req = client.put(format!("{}/latest/api/token", emu.url()));
    let req = match ttl {
        Some(t) => req.header(TTL, t),
        None => req,
    };
    req.send().await.unwrap()
}

#[tokio::test]
async fn token_put_validates_the_ttl() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    for bad in [None, Some("0"), Some("21601"), Some("abc"), Some("-5")] {
        assert_eq!(put_token(&c, &emu, bad).await.status(), 400, "{bad:?}");
    }
    let ok = put_token(&c, &emu, Some("21600")).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()[TTL], "21600");
    assert!(!ok.text().await.unwrap().is_empty());
}

#[tokio::test]
async fn put_through_a_proxy_is_refused() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .put(format!("{}/latest/api/token", emu.url()))
        .header(TTL, "60")
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn methods_paths_and_token_modes() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("{}{p}", emu.url());
    assert_eq!(c.get(url("/latest/api/token")).send().await.unwrap().status(), 405);
    assert_eq!(c.post(url("/latest/meta-data/instance-id")).send().await.unwrap().status(), 405);
    assert_eq!(
        c.get(url("/latest/meta-data/instance-id")).send().await.unwrap().status(),
        401,
        "tokens required"
    );
    let token = put_token(&c, &emu, Some("60")).await.text().await.unwrap();
    let get = |p: &str, t: &str| c.get(url(p)).header("x-aws-ec2-metadata-token", t.to_string()).send();
    assert_eq!(get("/latest/meta-data/instance-id", &token).await.unwrap().status(), 200);
    assert_eq!(get("/latest/meta-data/no-such-thing", &token).await.unwrap().status(), 404);
    assert_eq!(get("/latest/meta-data/instance-id", "forged").await.unwrap().status(), 401);
    emu.expire_all_tokens();
    assert_eq!(get("/latest/meta-data/instance-id", &token).await.unwrap().status(), 401, "expired");
    emu.update(|cfg| cfg.tokens = TokenMode::Optional);
    assert_eq!(c.get(url("/latest/meta-data/instance-id")).send().await.unwrap().status(), 200, "IMDSv1");
    emu.update(|cfg| cfg.enabled = false);
    assert_eq!(c.get(url("/latest/meta-data/instance-id")).send().await.unwrap().status(), 403);
    assert_eq!(put_token(&c, &emu, Some("60")).await.status(), 403);
    emu.update(|cfg| {
        cfg.enabled = true;
        cfg.throttle_next = 1;
    });
    assert_eq!(c.get(url("/latest/meta-data/instance-id")).send().await.unwrap().status(), 429);
}

#[tokio::test]
async fn tokens_expire_after_their_ttl() {
    let emu = Emulator::start(EmulatorConfig::default()).await;
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let token = put_token(&c, &emu, Some("1")).await.text().await.unwrap();
    let get = || {
        c.get(format!("{}/latest/meta-data/ami-id", emu.url()))
            .header("x-aws-ec2-metadata-token", token.clone())
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(get().await.unwrap().status(), 401);
}
