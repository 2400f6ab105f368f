//! The comparisons the report rests on: what each library's text changes against ours, and
//! that every message-path variant counts what it is given.

use crate::path::{ClientCached, ClientFamilies, MessagePath, Ours, TenantLabel};
use crate::scrape::{self, differences};
use std::sync::Arc;

#[test]
fn differences_ignore_order_and_show_changed_lines() {
    let ours = "a 1\nb 2\n";
    assert_eq!(differences(ours, "b 2\na 1\n", 4), (0, 0, Vec::new()));
    assert!(!scrape::same_order(ours, "b 2\na 1\n"));
    let (missing, added, shown) = differences(ours, "a 1\nb 3\n", 4);
    assert_eq!((missing, added), (1, 1));
    assert_eq!(shown, ["- b 2", "+ b 3"]);
}

#[test]
fn ours_describes_every_family_even_without_series_and_the_libraries_do_not() -> anyhow::Result<()>
{
    let figures = scrape::tenants(0);
    let ours = scrape::Ours::new(&figures).render();
    assert_eq!(ours.lines().count(), 22);
    assert!(ours.contains("# TYPE switchboard_closes_total counter\n"));
    assert_eq!(scrape::Client::new(&figures).render()?, "");
    assert_eq!(scrape::Tikv::new(&figures)?.render()?, "");
    Ok(())
}

#[test]
fn with_series_only_tikv_changes_lines_by_sorting_label_names() -> anyhow::Result<()> {
    let figures = scrape::tenants(2);
    let ours = scrape::Ours::new(&figures).render();
    assert!(ours.contains("switchboard_closes_total{tenant=\"tenant-0001\",code=\"1000\"} 4\n"));
    let client = scrape::Client::new(&figures).render()?;
    assert_eq!(differences(&ours, &client, 0).0, 0);
    assert_eq!(differences(&ours, &client, 0).1, 0);
    let tikv = scrape::Tikv::new(&figures)?.render()?;
    assert!(tikv.contains("switchboard_closes_total{code=\"1000\",tenant=\"tenant-0001\"} 4\n"));
    assert_eq!(differences(&ours, &tikv, 0).0, 2);
    Ok(())
}

#[test]
fn ours_and_cached_handles_count_messages_and_bytes() {
    let ours = Arc::new(Ours::default());
    ours.count(64);
    ours.count(100);
    assert_eq!(ours.totals(), [2, 164, 2, 164]);
    let families = ClientFamilies::default();
    let label = TenantLabel {
        tenant: "t".to_owned(),
    };
    let cached = Arc::new(ClientCached::new(&families, &label));
    cached.count(64);
    assert_eq!(families.bytes_out.get_or_create(&label).get(), 64);
}
