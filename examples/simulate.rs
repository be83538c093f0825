//! The seed's story on a virtual clock, printed as a timeline.
//!
//! ```text
//! cargo run --example simulate
//! ```
//!
//! Story 1: a customer texts → the primary is texted → 15 minutes of
//! silence → the backup is texted → the backup replies → the customer gets
//! the reply from the business number.
//!
//! Story 2: delivery to the primary fails → the backup is texted at once.

use std::time::Duration;

use qdn_relay::core::testing::Simulation;
use qdn_relay::core::{
    DeliveryError, DeliveryStatus, ErrorClass, PhoneNumber, Policy, Purpose, State,
};

fn number(s: &str) -> PhoneNumber {
    s.parse().expect("valid E.164 number")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let line = number("+16195550000"); // the business number
    let customer = number("+16195550100");
    let primary = number("+16195550101"); // Sergio
    let backup = number("+18583354807");
    let policy = Policy::simple(primary, backup, Duration::from_secs(15 * 60))?;

    println!("Story 1: nobody answers at the primary; the backup replies\n");
    let sim = Simulation::new(line, policy.clone());
    let opened = sim
        .customer_texts(customer, "Hi, can I get a 10-yard dumpster Friday?")
        .await?;
    sim.advance(Duration::from_secs(15 * 60)).await?;
    sim.advance(Duration::from_secs(2 * 60)).await?;
    sim.dispatcher_texts(backup, "Yes! Dropping it off Friday 8am.")
        .await?;
    print!("{}", sim.timeline());
    let d = sim
        .store
        .all()
        .into_iter()
        .find(|d| d.id() == opened.dispatch())
        .expect("dispatch");
    let status = d.status();
    println!(
        "\nfinal_status: {:?}, state: {}, customer received: {:?}\n",
        status.final_status,
        d.state().as_str(),
        sim.provider
            .accepted_to(customer)
            .iter()
            .map(|s| s.message.body.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(d.state(), State::Acked);

    println!("Story 2: delivery to the primary fails; the backup is texted at once\n");
    let sim = Simulation::new(line, policy);
    sim.customer_texts(customer, "Is anyone there? Trailer blocking the dumpster.")
        .await?;
    sim.advance(Duration::from_secs(20)).await?;
    let to_primary = sim.provider.accepted_to(primary);
    let sid = to_primary[0].result.clone()?;
    sim.report(
        &sid,
        DeliveryStatus::Undelivered,
        Some(DeliveryError {
            code: 30003,
            class: ErrorClass::RetryLater,
        }),
    )
    .await?;
    print!("{}", sim.timeline());
    let d = &sim.store.all()[0];
    let backup_leg = d
        .legs()
        .iter()
        .find(|l| l.to == backup)
        .expect("backup texted");
    assert_eq!(backup_leg.purpose, Purpose::Forward { round: 0, level: 1 });
    println!(
        "\nbackup texted {} s after the customer's text (not 15 min)",
        backup_leg.created_at.since(d.opened_at()).as_secs()
    );
    Ok(())
}
