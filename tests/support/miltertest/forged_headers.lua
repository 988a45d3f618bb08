-- Headers that claim our authserv-id or our verdict header are deleted, also
-- from IPv4 mail; another authserv-id's Authentication-Results is kept.
-- Deletion is a header change to an empty value, last occurrence first.
dofile(DIR .. "/common.lua")

run("forged_headers", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn, {
    {"Authentication-Results", AUTHSERV .. "; dkim=pass header.d=example.net"},
    {"Authentication-Results", "other.example; dkim=pass header.d=example.net"},
    {"X-MX6-Verdict", "whitelisted; evidence=forged"},
  })
  ok(mt.eoh(conn), "eoh")
  expect_reply(conn, SMFIR_CONTINUE, "eoh")
  ok(mt.bodystring(conn, "Hello.\r\n"), "body")
  ok(mt.eom(conn), "eom")
  expect_reply(conn, SMFIR_ACCEPT, "eom")
  if not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 1) then
    fail("eom: the forged Authentication-Results (the first) was not deleted")
  end
  if mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results", 2) then
    fail("eom: other.example's Authentication-Results was deleted")
  end
  if not mt.eom_check(conn, MT_HDRDELETE, "X-MX6-Verdict", 1) then
    fail("eom: the forged X-MX6-Verdict was not deleted")
  end
  if mt.eom_check(conn, MT_HDRINSERT) or mt.eom_check(conn, MT_HDRADD) then
    fail("eom: a header was added to IPv4 mail")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
