//! IDM's external services against real servers: `external/rest` calls a recording HTTP
//! upstream (plain and TLS with a test CA in certs/), refuses private addresses unless
//! the allow list opens them; `external/email` sends through a real SMTP server
//! (nodemailer's smtp-server under node), plain, STARTTLS and SMTPS, with and without AUTH.

mod common;

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use common::{
    json_of, Gateway, HangingUpstream, RecordingUpstream, SmtpOptions, SmtpServer, TestPki,
};

const WAIT: Duration = Duration::from_secs(10);

async fn call(gw: &Gateway, body: &Value) -> (u16, Value) {
    json_of(
        gw.post("/openidm/external/rest?_action=call")
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn allow_loopback() -> Value {
    json!({"allow": ["127.0.0.1/32"], "socketTimeout": "2 s", "connectionTimeout": "2 s"})
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_call_answers_as_idm_does() {
    let up = RecordingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.rest", allow_loopback())
        .start()
        .await;
    let url = format!("{}/echo?x=1", up.base_url());

    // A JSON answer comes back as is; headers, method, body and content type are sent.
    let (status, body) = call(
        &gw,
        &json!({"url": url, "method": "post", "headers": {"X-Test": "yes"}, "body": "{\"a\":1}"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["uri"], "/echo?x=1");
    assert_eq!(body["headers"]["x-test"], json!(["yes"]));
    assert_eq!(
        body["headers"]["content-type"],
        json!(["application/json; charset=utf-8"])
    );
    assert_eq!(body["bodyLen"], 7);

    // forceWrap: headers, status and the body as text.
    let (status, body) = call(
        &gw,
        &json!({"url": url, "method": "GET", "forceWrap": true, "contentType": "text/plain"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 200);
    assert_eq!(body["headers"]["Content-Type"], json!(["application/json"]));
    assert_eq!(body["headers"]["X-Upstream"], json!(["recording"]));
    let inner: Value = serde_json::from_str(body["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["method"], "GET");

    // A body that is not text is base64.
    let (status, body) = call(
        &gw,
        &json!({"url": format!("{}/big?n=5", up.base_url()), "method": "GET"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["base64"], true, "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 5);

    // A 4xx answer is a CREST error with that status; the answer is in the detail.
    let (status, body) = call(
        &gw,
        &json!({"url": format!("{}/status/404", up.base_url()), "method": "GET"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["reason"], "Not Found");
    assert_eq!(body["message"], "status 404 from recording upstream");
    assert_eq!(body["detail"]["code"], 404);

    // Redirects are followed to the same origin only; any other comes back as the 3xx.
    let enc = |u: &str| url::form_urlencoded::byte_serialize(u.as_bytes()).collect::<String>();
    let (status, body) = call(
        &gw,
        &json!({"url": format!("{}/redirect?to={}", up.base_url(), enc("/after"))}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["uri"], "/after");
    let elsewhere = RecordingUpstream::start();
    let (status, body) = call(
        &gw,
        &json!({"url": format!("{}/redirect?to={}", up.base_url(), enc(&format!("{}/x", elsewhere.base_url())))}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["code"], 302, "{body}");
    assert_eq!(
        body["headers"]["Location"],
        json!([format!("{}/x", elsewhere.base_url())])
    );
    assert_eq!(elsewhere.count(), 0);

    // Bad input is a 400 that names it.
    let (status, body) = call(&gw, &json!({"method": "GET"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("'url'"),
        "{body}"
    );

    // Scripts call it through the router.
    let (status, body) = json_of(
        gw.post("/openidm/script?_action=eval")
            .json(&json!({
                "type": "text/javascript",
                "source": format!(
                    "openidm.action('external/rest', 'call', {{url: '{url}', method: 'DELETE'}}).method"
                )
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!("DELETE")));

    // Administrators only from HTTP.
    let (status, _) = json_of(
        gw.put("/openidm/internal/user/plain")
            .json(&json!({"password": "Passw0rd!x", "roles": ["internal/role/openidm-authorized"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 201 || status == 200, "{status}");
    let before = up.count();
    let r = gw
        .as_user(
            Method::POST,
            "/openidm/external/rest?_action=call",
            "plain",
            "Passw0rd!x",
        )
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.count(), before);
    // Headers sent on the caller's behalf never reach the log.
    call(
        &gw,
        &json!({"url": url, "headers": {"Authorization": "Bearer s3cr3t-t0ken"}}),
    )
    .await;
    assert_eq!(
        up.last().unwrap().header("authorization"),
        Some("Bearer s3cr3t-t0ken")
    );
    assert!(!gw.logs().contains("s3cr3t-t0ken"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_call_refuses_private_addresses_by_default() {
    let up = RecordingUpstream::start();
    let gw = Gateway::start().await;
    let port = up.port();
    for (url, why) in [
        (
            format!("http://127.0.0.1:{port}/"),
            "127.0.0.1 is a loopback address",
        ),
        (format!("http://localhost:{port}/"), "is a loopback address"),
        (format!("http://[::1]:{port}/"), "::1 is a loopback address"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        (
            "http://10.1.2.3/".to_owned(),
            "10.1.2.3 is a private address",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 is a link-local address",
        ),
        ("http://0.0.0.0/".to_owned(), "unspecified"),
    ] {
        let (status, body) = call(&gw, &json!({"url": url, "method": "GET"})).await;
        assert_eq!(status, 403, "{url}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(why), "{url}: {message}");
        assert!(message.contains("\"allow\""), "{url}: {message}");
    }
    assert_eq!(up.count(), 0);

    // The allow list (gateway extra) opens what it names, and nothing else.
    gw.write_conf(
        "external.rest",
        &json!({"allow": [format!("localhost:{port}")]}),
    );
    assert!(
        common::eventually(WAIT, || async {
            call(&gw, &json!({"url": format!("http://localhost:{port}/a")}))
                .await
                .0
                == 200
        })
        .await,
        "{}",
        gw.logs()
    );
    let (status, _) = call(&gw, &json!({"url": format!("http://127.0.0.1:{port}/a")})).await;
    assert_eq!(status, 403);

    // A bad file is rejected with its problems named; the last good one stays live.
    gw.write_conf("external.rest", &json!({"allow": ["10.0.0.0/99"]}));
    assert!(gw.wait_for_log("config rejected", WAIT).await);
    assert!(
        gw.logs().contains("allow/0: '10.0.0.0/99'"),
        "{}",
        gw.logs()
    );
    let (status, body) = call(&gw, &json!({"url": format!("http://localhost:{port}/b")})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_call_times_out_and_trusts_certs_dir() {
    let pki = TestPki::new();
    let trusted = RecordingUpstream::start_tls(pki.server_config());
    let untrusted = RecordingUpstream::start_tls(pki.untrusted_server_config());
    let hanging = HangingUpstream::start();
    let gw = Gateway::builder()
        .conf_file("external.rest", allow_loopback())
        .cert("test-ca", &pki.ca_pem())
        .start()
        .await;

    let (status, body) = call(
        &gw,
        &json!({"url": format!("https://localhost:{}/tls", trusted.port())}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(trusted.last().unwrap().tls);

    let (status, body) = call(
        &gw,
        &json!({"url": format!("https://localhost:{}/tls", untrusted.port())}),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(untrusted.count(), 0);

    let (status, body) = call(&gw, &json!({"url": hanging.url()})).await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("socketTimeout (2 s)"),
        "{body}"
    );
}

fn email_conf(port: u16) -> Value {
    json!({"host": "127.0.0.1", "port": port, "from": "idm@example.com"})
}

async fn send(gw: &Gateway, action: &str, body: &Value) -> (u16, Value) {
    json_of(
        gw.post(&format!("/openidm/external/email?_action={action}"))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let head = data.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread")]
async fn email_send_and_send_template_reach_the_smtp_server() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let gw = Gateway::builder()
        .conf_file("external.email", email_conf(smtp.port()))
        .conf_file(
            "emailTemplate-welcome",
            json!({
                "enabled": true,
                "from": "",
                "subject": {"en": "Welcome {{object.givenName}}", "fr": "Bienvenue {{object.givenName}}"},
                "message": {
                    "en": "<p>Your user name is {{object.userName}}.</p>",
                    "fr": "<p>Votre nom d'utilisateur est {{object.userName}}.</p>"
                },
                "defaultLocale": "en",
                "mimeType": "text/html"
            }),
        )
        .conf_file("emailTemplate-off", json!({"enabled": false, "message": {"en": "x"}}))
        .start()
        .await;

    let (status, body) = send(
        &gw,
        "send",
        &json!({
            "to": "a@example.com, b@example.com",
            "cc": "c@example.com",
            "bcc": "d@example.com",
            "subject": "Hello there",
            "body": "Plain body text",
            "type": "text/plain"
        }),
    )
    .await;
    assert_eq!(
        (status, &body),
        (200, &json!({"status": "OK", "message": "Email sent"}))
    );
    let got = smtp.wait_for(1, WAIT).await;
    let m = &got[0];
    assert_eq!(m["mailFrom"], "idm@example.com");
    assert_eq!(
        m["rcptTo"],
        json!([
            "a@example.com",
            "b@example.com",
            "c@example.com",
            "d@example.com"
        ])
    );
    let data = m["data"].as_str().unwrap();
    assert_eq!(header(data, "From"), Some("idm@example.com"));
    assert_eq!(header(data, "To"), Some("a@example.com, b@example.com"));
    assert_eq!(header(data, "Cc"), Some("c@example.com"));
    assert_eq!(header(data, "Bcc"), None);
    assert_eq!(header(data, "Subject"), Some("Hello there"));
    assert_eq!(
        header(data, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(data.ends_with("Plain body text\r\n") || data.contains("\r\n\r\nPlain body text"));

    let (status, body) = json_of(
        gw.post("/openidm/external/email?_action=sendTemplate&_locale=fr")
            .json(&json!({
                "templateName": "welcome",
                "to": "bjensen@example.com",
                "from": "Admin <admin@example.com>",
                "object": {"userName": "bjensen", "givenName": "Babs"}
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got = smtp.wait_for(2, WAIT).await;
    let data = got[1]["data"].as_str().unwrap();
    assert_eq!(got[1]["mailFrom"], "admin@example.com");
    assert_eq!(header(data, "Subject"), Some("Bienvenue Babs"));
    assert_eq!(
        header(data, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        data.contains("Votre nom d'utilisateur est bjensen."),
        "{data}"
    );

    // Bad requests are 400s that name what is wrong; unknown templates 404.
    for (action, req, says) in [
        ("send", json!({"subject": "x"}), "'to' is required"),
        (
            "send",
            json!({"to": "not an address"}),
            "'to' has an address",
        ),
        (
            "send",
            json!({"to": "a@example.com", "type": "image/png"}),
            "type 'image/png'",
        ),
        (
            "sendTemplate",
            json!({"to": "a@example.com"}),
            "'templateName' is required",
        ),
        (
            "sendTemplate",
            json!({"to": "a@example.com", "templateName": "off"}),
            "disabled",
        ),
    ] {
        let (status, body) = send(&gw, action, &req).await;
        assert_eq!(status, 400, "{req}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    let (status, _) = send(
        &gw,
        "sendTemplate",
        &json!({"to": "a@example.com", "templateName": "nope"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn email_uses_auth_and_tls_with_the_certs_trust() {
    let pki = TestPki::new();
    let (cert, key) = pki.server_cert(&["localhost", "127.0.0.1"]);
    let auth = Some(("smtp-user".to_owned(), "smtp-Pa55word".to_owned()));
    let starttls = SmtpServer::start(SmtpOptions {
        auth: auth.clone(),
        tls: Some((cert.clone(), key.clone())),
        secure: false,
    });
    let smtps = SmtpServer::start(SmtpOptions {
        auth,
        tls: Some((cert, key)),
        secure: true,
    });
    let conf = |port: u16, password: &str, starttls: bool| {
        json!({
            "host": "127.0.0.1", "port": port, "from": "idm@example.com",
            "auth": {"enable": true, "username": "smtp-user", "password": password},
            "starttls": {"enable": starttls}, "ssl": {"enable": !starttls},
            "timeout": 5000, "connectiontimeout": 5000, "writetimeout": 5000
        })
    };
    let gw = Gateway::builder()
        .conf_file(
            "external.email",
            conf(starttls.port(), "smtp-Pa55word", true),
        )
        .cert("test-ca", &pki.ca_pem())
        .start()
        .await;
    let mail = json!({"to": "a@example.com", "subject": "s", "body": "b"});

    let (status, body) = send(&gw, "send", &mail).await;
    assert_eq!(status, 200, "{body}");
    let got = starttls.wait_for(1, WAIT).await;
    assert_eq!(got[0]["user"], "smtp-user");
    assert_eq!(got[0]["secure"], true);

    // SMTPS once the reload is live.
    gw.write_conf(
        "external.email",
        &conf(smtps.port(), "smtp-Pa55word", false),
    );
    assert!(
        common::eventually(WAIT, || async {
            send(&gw, "send", &mail).await.0 == 200 && !smtps.messages().is_empty()
        })
        .await,
        "{}",
        gw.logs()
    );
    let got = smtps.messages();
    assert_eq!(got[0]["user"], "smtp-user");
    assert_eq!(got[0]["secure"], true);

    // A wrong password: the server's refusal, not the password.
    gw.write_conf(
        "external.email",
        &conf(smtps.port(), "wrong-Pa55word", false),
    );
    assert!(
        common::eventually(WAIT, || async { send(&gw, "send", &mail).await.0 == 502 }).await,
        "{}",
        gw.logs()
    );
    let accepted = smtps.messages().len();
    let (status, body) = send(&gw, "send", &mail).await;
    assert_eq!(status, 502, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("wrong-Pa55word") && !gw.logs().contains("Pa55word"));
    assert_eq!(smtps.messages().len(), accepted);
}

#[tokio::test(flavor = "multi_thread")]
async fn email_errors_are_clear_when_smtp_is_missing() {
    // No external.email.json.
    let gw = Gateway::start().await;
    let mail = json!({"to": "a@example.com", "from": "idm@example.com", "subject": "s"});
    let (status, body) = send(&gw, "send", &mail).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not configured"),
        "{body}"
    );

    // A server nobody listens on.
    let port = common::free_port();
    gw.write_conf("external.email", &email_conf(port));
    let expected = format!("cannot reach the SMTP server 127.0.0.1:{port}");
    assert!(
        common::eventually(WAIT, || async {
            let (status, body) = send(&gw, "send", &mail).await;
            status == 503 && body["message"].as_str().unwrap_or("").contains(&expected)
        })
        .await,
        "{:?}",
        send(&gw, "send", &mail).await
    );

    // A bad file is rejected with its problems named.
    gw.write_conf(
        "external.email",
        &json!({"port": "x", "auth": {"enable": true}}),
    );
    assert!(gw.wait_for_log("config rejected", WAIT).await);
    let logs = gw.logs();
    assert!(
        logs.contains("host: the SMTP server's host name is required"),
        "{logs}"
    );
    assert!(logs.contains("auth/username"), "{logs}");
}
