-- An analyst at the bank explores the retail federation (run: sqlsecure shell -F federation.toml --as bank -f this file)
\d shop.orders
SELECT region, COUNT(*) AS customers FROM customers GROUP BY region ORDER BY region;
SELECT o.category, COUNT(*) AS orders, SUM(o.amount) AS revenue
  FROM customers c JOIN shop.orders o ON c.customer_id = o.customer_id
 GROUP BY o.category ORDER BY o.category;
SELECT c.region, SUM(o.amount) AS spent
  FROM customers c JOIN shop.orders o ON c.customer_id = o.customer_id
 GROUP BY c.region ORDER BY c.region;
\x
SELECT COUNT(*) AS insured, SUM(p.premium) AS premiums
  FROM customers c JOIN insurer.policies p ON c.customer_id = p.customer_id;
\x
-- the analyst tries to see single orders: refused, and the script stops with exit code 1
SELECT c.name, o.amount FROM customers c JOIN shop.orders o ON c.customer_id = o.customer_id;
