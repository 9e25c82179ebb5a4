//! The HTTP asset canister: a few static assets served by `http_request`,
//! with responses certified by HTTP certification version 2.
//!
//! Each asset is certified for its exact path with a response-only CEL
//! expression covering the status, the body and `content-type`; every other
//! path gets a certified 404 through a wildcard entry at `/`. The root hash
//! of the certification tree is the canister's certified data, and each
//! response carries `IC-Certificate` (data certificate, witness, expression
//! path) and `IC-CertificateExpression`.

use candid::Principal;
use ic_http_certification::{
    CERTIFICATE_EXPRESSION_HEADER_NAME, DefaultCelBuilder, DefaultResponseCertification,
    DefaultResponseOnlyCelExpression, HttpCertification, HttpCertificationPath,
    HttpCertificationTree, HttpCertificationTreeEntry, HttpRequest, HttpResponse, StatusCode,
    utils::add_v2_certificate_header,
};

use super::{CallContext, Canister, Outcome, Reject};
use crate::hash::{Hash, sha256};

/// The static assets: path, content type, body.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        "<!doctype html>\n<html><head><title>icos testnet</title></head>\n<body><h1>Hello from an icos testnet replica</h1></body></html>\n",
    ),
    ("/hello.txt", "text/plain; charset=utf-8", "Hello, world!\n"),
    (
        "/data.json",
        "application/json",
        "{\"served_by\":\"icos-testnet-replica\",\"certified\":true}\n",
    ),
];

const NOT_FOUND_BODY: &str = "Not found\n";

struct Entry {
    path: HttpCertificationPath<'static>,
    response: HttpResponse<'static>,
    entry: HttpCertificationTreeEntry<'static>,
}

/// The asset canister's state.
pub struct Assets {
    id: Principal,
    tree: HttpCertificationTree,
    exact: Vec<(String, Entry)>,
    not_found: Entry,
}

impl std::fmt::Debug for Assets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assets")
            .field("id", &self.id.to_text())
            .finish_non_exhaustive()
    }
}

fn cel() -> DefaultResponseOnlyCelExpression<'static> {
    DefaultCelBuilder::response_only_certification()
        .with_response_certification(DefaultResponseCertification::certified_response_headers(
            vec!["content-type"],
        ))
        .build()
}

fn certified(
    path: HttpCertificationPath<'static>,
    status: StatusCode,
    content_type: &str,
    body: &str,
) -> Result<Entry, String> {
    let cel = cel();
    let response = HttpResponse::builder()
        .with_status_code(status)
        .with_body(body.as_bytes().to_vec())
        .with_headers(vec![
            ("content-type".to_string(), content_type.to_string()),
            (
                CERTIFICATE_EXPRESSION_HEADER_NAME.to_string(),
                cel.to_string(),
            ),
        ])
        .build();
    let certification =
        HttpCertification::response_only(&cel, &response, None).map_err(|e| e.to_string())?;
    let entry = HttpCertificationTreeEntry::new(path.clone(), certification);
    Ok(Entry {
        path,
        response,
        entry,
    })
}

impl Assets {
    /// The canister with its assets certified.
    pub fn new(id: Principal) -> Result<Self, String> {
        let mut tree = HttpCertificationTree::default();
        let mut exact = Vec::new();
        for (path, ct, body) in ASSETS {
            let e = certified(
                HttpCertificationPath::exact(*path),
                StatusCode::OK,
                ct,
                body,
            )?;
            tree.insert(&e.entry);
            exact.push((path.to_string(), e));
        }
        let root = certified(
            HttpCertificationPath::exact("/"),
            StatusCode::OK,
            ASSETS[0].1,
            ASSETS[0].2,
        )?;
        tree.insert(&root.entry);
        exact.push(("/".to_string(), root));
        let not_found = certified(
            HttpCertificationPath::wildcard("/"),
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            NOT_FOUND_BODY,
        )?;
        tree.insert(&not_found.entry);
        Ok(Assets {
            id,
            tree,
            exact,
            not_found,
        })
    }

    fn http_request(&self, arg: &[u8], ctx: &CallContext<'_>) -> Outcome {
        let req: HttpRequest = candid::decode_one(arg).map_err(|e| Reject::trap(&self.id, e))?;
        let path = req.get_path().map_err(|e| Reject::trap(&self.id, e))?;
        let entry = self
            .exact
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, e)| e)
            .unwrap_or(&self.not_found);
        let witness = self
            .tree
            .witness(&entry.entry, &path)
            .map_err(|e| Reject::trap(&self.id, e))?;
        let mut response = entry.response.clone();
        add_v2_certificate_header(
            &(ctx.data_certificate)(),
            &mut response,
            &witness,
            &entry.path.to_expr_path(),
        );
        candid::encode_one(&response).map_err(|e| Reject::trap(&self.id, e))
    }
}

impl Canister for Assets {
    fn id(&self) -> Principal {
        self.id
    }

    fn module_hash(&self) -> Hash {
        sha256(b"icos-testnet-replica built-in canister: assets")
    }

    fn certified_data(&self) -> Vec<u8> {
        self.tree.root_hash().to_vec()
    }

    fn query(&self, method: &str, arg: &[u8], ctx: &CallContext<'_>) -> Option<Outcome> {
        match method {
            "http_request" => Some(self.http_request(arg, ctx)),
            _ => None,
        }
    }

    fn update(&mut self, method: &str, arg: &[u8], ctx: &CallContext<'_>) -> Option<Outcome> {
        self.query(method, arg, ctx)
    }
}
