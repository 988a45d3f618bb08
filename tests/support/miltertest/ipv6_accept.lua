-- An IPv6 client on the whitelist: accepted at end of message with the
-- verdict header exactly as -D VERDICT says (leading space included: the
-- milter negotiates SMFIP_HDR_LEADSPC) and our Authentication-Results.
dofile(DIR .. "/common.lua")

run("ipv6_accept", function()
  local conn = sendmail_connect()
  sendmail_envelope(conn)
  ok(mt.eoh(conn), "eoh")
  ok(mt.bodystring(conn, "Hello.\r\n"), "body")
  ok(mt.eom(conn), "eom")
  expect_reply(conn, SMFIR_ACCEPT, "eom")
  if not mt.eom_check(conn, MT_HDRINSERT, "X-MX6-Verdict", VERDICT, 0) then
    fail("eom: X-MX6-Verdict not inserted at the top as '" .. VERDICT .. "', got '"
         .. tostring(mt.getheader(conn, "X-MX6-Verdict", 0)) .. "'")
  end
  local results = mt.getheader(conn, "Authentication-Results", 0)
  local prefix = " " .. AUTHSERV .. "; spf=pass"
  if results == nil or string.sub(results, 1, #prefix) ~= prefix then
    fail("eom: Authentication-Results is " .. tostring(results))
  end
  if mt.getheader(conn, "Authentication-Results", 1) ~= nil then
    fail("eom: more than one Authentication-Results added")
  end
  ok(mt.disconnect(conn), "disconnect")
end)
