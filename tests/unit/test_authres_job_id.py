"""claimed_job_id: "AUTHSERV_ID/JOBID", the form OpenDKIM and OpenDMARC write with
AuthservIDWithJobID. Pure."""
from hypothesis import given
from hypothesis import strategies as st

from mx6milter.evidence.auth import claimed_job_id, claims_authserv_id

OURS = "mx.example.org"


def test_the_job_id_of_our_authserv_id_in_its_usual_shapes():
    assert claimed_job_id("mx.example.org/4Ng8yz0Qq8zTj; dkim=pass", OURS) == "4Ng8yz0Qq8zTj"
    assert claimed_job_id(' "MX.Example.ORG./EE53A2"; spf=pass', OURS) == "EE53A2"
    assert claimed_job_id("mx.example.org/EE53A2 1; dkim=pass", OURS) == "EE53A2"
    assert claimed_job_id("\r\n (c) mx.example.org/EE53A2; dkim=pass", OURS) == "EE53A2"


def test_not_ours_or_without_a_job_id_is_none():
    assert claimed_job_id("other.example/EE53A2; dkim=pass", OURS) is None
    assert claimed_job_id("mx.example.org; dkim=pass", OURS) is None
    assert claimed_job_id("mx.example.org.evil/X; dkim=pass", OURS) is None


def test_shapes_no_mta_writes_give_an_id_no_queue_has():
    assert claimed_job_id("mx.example.org/A/B; dkim=pass", OURS) == ""
    assert claimed_job_id("mx.example.org/; dkim=pass", OURS) == ""
    assert claimed_job_id("mx.example.org/A (x) /B; dkim=pass", OURS) == ""


@given(st.text(max_size=300))
def test_never_raises_and_a_job_id_is_never_a_separator(value):
    job = claimed_job_id(value, OURS)
    assert job is None or not any(ch in job for ch in " ;()/\"\\")


@given(st.from_regex(r"[A-Za-z0-9]{1,16}", fullmatch=True), st.sampled_from(["", " 1", " (c)"]))
def test_our_id_with_any_job_id_is_claimed_with_that_job_id(job, tail):
    value = f" {OURS}/{job}{tail}; dkim=pass"
    assert claimed_job_id(value, OURS) == job
    assert not claims_authserv_id(f" other.example/{job}{tail}; dkim=pass", OURS)
